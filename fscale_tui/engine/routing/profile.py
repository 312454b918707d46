"""Profiling: run models on a labelled task file and keep what they did.

``<data>/routing/profiles.json`` (atomic writes, read-modify-write under the file lock)::

    {"version": 1,
     "prompts": {KEY: {"id": "q1", "text": "…", "label": "YES", "category": "math"}},
     "models":  {ALIAS: {"items": {KEY: {"answers": ["YES", null], "latency_s": [0.4, 0.5]}}}}}

KEY is the prompt's hash (``Task.key``), so the same question in two files is profiled once.
``answers`` holds one entry per trial (``null`` = the reply held no answer); failed calls are
not stored, so ``--resume`` asks them again. Adding a model profiles only that model; with
``resume`` nothing already stored is asked again.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..config import ModelConfig
from ..errors import UsageError
from .router import ClusterModel, Router, routing_dir, router_from_observations
from .tasks import Task

#: Trials after the first are sampled at least this warm, or "stability" would mean nothing.
TRIAL_TEMPERATURE = 0.7
SAVE_EVERY = 50


def profiles_path(settings: Any) -> Path:
    return routing_dir(settings) / "profiles.json"


@dataclass
class Outcome:
    model: str
    answer: str | None
    latency_s: float
    error: str | None = None
    calls: int = 1


async def ask_model(engine: Any, model: ModelConfig, task_messages: list[dict[str, str]],
                    labels: tuple[str, ...], *, task_id: str | None = None,
                    temperature: float | None = None) -> Outcome:
    """One vote from one model through the engine's one ask path; a failure is an Outcome
    with ``error`` set. The task id reaches replay providers only (see ``ask.Asker``)."""
    reply = await engine.asker.ask(model, task_messages, labels=labels, task_id=task_id,
                                   temperature=temperature)
    if not reply.ok:
        return Outcome(model.alias, None, reply.latency_s or 0.0, error=reply.error)
    return Outcome(model.alias, reply.answer, reply.latency_s or 0.0)


class ProfileStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = storage.read_json(path)
        self.data.setdefault("version", 1)
        self.data.setdefault("prompts", {})
        self.data.setdefault("models", {})

    @classmethod
    def for_settings(cls, settings: Any) -> "ProfileStore":
        return cls(profiles_path(settings))

    def trials_done(self, model: str, key: str) -> int:
        item = self.data["models"].get(model, {}).get("items", {}).get(key)
        return len(item["answers"]) if item else 0

    def models(self) -> list[str]:
        return sorted(self.data["models"])

    def merge_and_save(self, new: dict[str, dict[str, dict[str, Any]]],
                       prompts: dict[str, dict[str, Any]]) -> None:
        """Add new trials to the file under the lock (another process may have written)."""

        def change(doc: dict[str, Any]) -> None:
            doc.setdefault("version", 1)
            doc.setdefault("prompts", {}).update(prompts)
            models = doc.setdefault("models", {})
            for model, items in new.items():
                target = models.setdefault(model, {}).setdefault("items", {})
                for key, item in items.items():
                    slot = target.setdefault(key, {"answers": [], "latency_s": []})
                    slot["answers"].extend(item["answers"])
                    slot["latency_s"].extend(item["latency_s"])
            self.data = doc

        storage.update_json(self.path, change)

    # -- reading ---------------------------------------------------------------------------
    def observations(self, model: str, keys: Iterable[str] | None = None) -> list[tuple[str, dict, dict]]:
        """(key, prompt, item) for a model's profiled prompts (optionally only ``keys``)."""
        items = self.data["models"].get(model, {}).get("items", {})
        wanted = set(keys) if keys is not None else None
        out = []
        for key, item in items.items():
            if wanted is not None and key not in wanted:
                continue
            prompt = self.data["prompts"].get(key)
            if prompt is None or not item["answers"]:
                continue
            out.append((key, prompt, item))
        return out

    def error_rates(self, model: str, keys: Iterable[str] | None = None) -> dict[str, float]:
        """Per prompt: the share of trials that did not give the gold label."""
        return {key: sum(a != prompt["label"] for a in item["answers"]) / len(item["answers"])
                for key, prompt, item in self.observations(model, keys)}


async def run_profile(engine: Any, tasks: Sequence[Task], models: Sequence[ModelConfig], *,
                      trials: int = 1, resume: bool = False,
                      on_progress: Callable[[int, int], None] | None = None,
                      concurrency: int | None = None) -> dict[str, int]:
    """Ask every model every task ``trials`` times; store the answers. Returns counts.

    With ``resume`` the trials already stored are skipped, so re-running after an interruption
    or after adding a model asks only what is missing.
    """
    if trials < 1:
        raise UsageError("--trials must be at least 1")
    store = ProfileStore.for_settings(engine.settings)
    jobs: list[tuple[ModelConfig, Task, int]] = []
    for model in models:
        for task in tasks:
            done = store.trials_done(model.alias, task.key) if resume else 0
            jobs.extend((model, task, t) for t in range(done, trials))
    prompts = {t.key: {"id": t.id, "text": t.text, "label": t.label, "category": t.category}
               for t in tasks}
    if not resume:
        # A fresh profile of these models on these prompts replaces what was stored.
        def reset(doc: dict[str, Any]) -> None:
            for model in models:
                items = doc.setdefault("models", {}).setdefault(model.alias, {}).setdefault("items", {})
                for task in tasks:
                    items.pop(task.key, None)

        storage.update_json(store.path, reset)
    limit = asyncio.Semaphore(concurrency or engine.settings.get("batch_concurrency"))
    pending: dict[str, dict[str, dict[str, Any]]] = {}
    counts = {"asked": 0, "failed": 0, "skipped": sum(len(tasks) * trials for _ in models) - len(jobs)}
    base_temp = float(engine.settings.get("temperature"))
    finished = 0

    def flush() -> None:
        if pending:
            store.merge_and_save(pending, prompts)
            pending.clear()

    async def one(model: ModelConfig, task: Task, trial: int) -> None:
        nonlocal finished
        temp = base_temp if trial == 0 else max(base_temp, TRIAL_TEMPERATURE)
        async with limit:
            out = await ask_model(engine, model, task.messages(), task.answers, task_id=task.id,
                                  temperature=temp)
        counts["asked"] += 1
        if out.error is not None:
            counts["failed"] += 1
        else:
            item = pending.setdefault(model.alias, {}).setdefault(task.key, {"answers": [], "latency_s": []})
            item["answers"].append(out.answer)
            item["latency_s"].append(round(out.latency_s, 4))
        finished += 1
        if on_progress is not None:
            on_progress(finished, len(jobs))
        if finished % SAVE_EVERY == 0:
            flush()

    # Trials of one prompt run in order so that trial 2 is appended after trial 1.
    by_trial: dict[int, list[tuple[ModelConfig, Task, int]]] = {}
    for job in jobs:
        by_trial.setdefault(job[2], []).append(job)
    try:
        for trial in sorted(by_trial):
            await asyncio.gather(*(one(*job) for job in by_trial[trial]))
    finally:
        flush()
    return counts


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


def summarize(store: ProfileStore, models: Sequence[str], settings: Any,
              clusters: ClusterModel | None = None, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Per-model accuracy, stability, latency, cost, no-answer rate; error correlation; Ψ."""
    keys = list(keys) if keys is not None else None
    report: dict[str, Any] = {"models": {}, "error_correlation": {}, "clusters": None}
    errors: dict[str, dict[str, float]] = {}
    for m in models:
        obs = store.observations(m, keys)
        if not obs:
            continue
        answers = [a for _, _, item in obs for a in item["answers"]]
        correct = [sum(a == p["label"] for a in item["answers"]) / len(item["answers"]) for _, p, item in obs]
        multi = [item["answers"] for _, _, item in obs if len(item["answers"]) > 1]
        latencies = [x for _, _, item in obs for x in item["latency_s"]]
        model_cfg = settings.models.get(m)
        errors[m] = {k: 1.0 - c for (k, _, _), c in zip(obs, correct)}
        report["models"][m] = {
            "items": len(obs), "trials": len(answers),
            "accuracy": round(sum(correct) / len(correct), 4),
            "stability": round(sum(len(set(a)) == 1 for a in multi) / len(multi), 4) if multi else None,
            "no_answer_rate": round(sum(a is None for a in answers) / len(answers), 4),
            "latency_median_s": round(statistics.median(latencies), 4) if latencies else None,
            "latency_p90_s": round(_percentile(latencies, 90) or 0.0, 4) if latencies else None,
            "cost": model_cfg.cost if model_cfg else None,
        }
    names = list(errors)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(errors[a]) & set(errors[b]))
            if len(shared) < 3:
                continue
            x = np.array([errors[a][k] for k in shared])
            y = np.array([errors[b][k] for k in shared])
            corr = None if x.std() == 0 or y.std() == 0 else round(float(np.corrcoef(x, y)[0, 1]), 4)
            report["error_correlation"][f"{a}|{b}"] = {"models": [a, b], "items": len(shared), "phi": corr}
    if clusters is not None and names:
        router = build_router(store, settings, clusters, models=names, keys=keys)
        report["clusters"] = {"k": clusters.k, "psi": {m: [round(float(v), 4) for v in router.psi[m]]
                                                        for m in names},
                              "n": {m: [int(v) for v in router.counts[m]] for m in names}}
    return report


def build_router(store: ProfileStore, settings: Any, clusters: ClusterModel | None, *,
                 models: Sequence[str] | None = None, keys: Iterable[str] | None = None,
                 smoothing: float | None = None) -> Router:
    """Ψ for every profiled model (only the configured ones unless ``models`` is given)."""
    names = list(models) if models is not None else [m for m in store.models() if m in settings.models]
    keys = list(keys) if keys is not None else None
    obs = {}
    for m in names:
        rates = store.error_rates(m, keys)
        texts = [store.data["prompts"][k]["text"] for k in rates]
        obs[m] = (texts, list(rates.values()))
    costs = {m: (settings.models[m].cost if m in settings.models else 0.0) for m in names}
    kwargs = {} if smoothing is None else {"smoothing": smoothing}
    return router_from_observations(clusters, obs, costs, **kwargs)


def load_router(settings: Any, *, models: Sequence[str] | None = None) -> Router | None:
    """The router from the stored clusters and profiles; None when nothing is profiled."""
    store = ProfileStore.for_settings(settings)
    names = [m for m in (models or store.models()) if m in settings.models and store.observations(m)]
    if not names:
        return None
    return build_router(store, settings, ClusterModel.load(routing_dir(settings)), models=names)
