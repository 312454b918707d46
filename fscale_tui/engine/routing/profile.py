"""Profiling: run models on a labelled task file and keep what they did.

``<data>/routing/profiles.jsonl`` is an append-only journal, one JSON record per line::

    {"p": KEY, "id": "q1", "text": "…", "label": "YES", "category": "math",
     "answers": ["YES", "NO"]}                                                a prompt
    {"m": ALIAS, "k": KEY, "t": 0, "a": "YES", "s": 0.41}                       one answer
    {"drop": {"models": [ALIAS, …], "keys": [KEY, …]}}                         forget trials

KEY is the prompt's hash (``Task.key``), so the same question in two files is profiled once;
``t`` is the trial (0 = first), ``a`` the answer (``null`` = the reply held no answer), ``s`` the
latency in seconds. Failed calls are not stored, so ``--resume`` asks them again. A fresh
profile (no ``--resume``) of some models on some prompts appends a ``drop`` record, then their
answers. Records are replayed in order into memory (:class:`ProfileStore`).

A run keeps everything in memory and appends a checkpoint of the answers gathered every
``SAVE_EVERY`` answers or ``CHECKPOINT_S`` seconds (under the file lock, so processes never
interleave half lines): the work per checkpoint is proportional to what it adds, never to the
size of the profile. An interrupted run (Ctrl-C, an error) appends what it has before it stops;
a killed one loses at most the last second of answers; ``--resume`` asks only what is missing. A torn last line (a process killed mid-write) is ignored and repaired by
the next append. The journal is rewritten (compacted) only when dropped records outnumber the
live ones. A ``profiles.json`` of an earlier version is converted on first use.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ask.context import Context
from ..base import storage
from ..base.errors import UsageError
from ..base.settings import ModelConfig
from .router import (ClusterModel, Router, choose_smoothing, read_knobs, router_from_assignments,
                     routing_dir, write_knobs)
from .tasks import Task

if TYPE_CHECKING:
    from ..base.settings import Settings


#: Trials after the first are sampled at least this warm, or "stability" would mean nothing.
TRIAL_TEMPERATURE = 0.7
#: A checkpoint is appended every SAVE_EVERY answers or CHECKPOINT_S seconds, whichever first.
SAVE_EVERY = 500
CHECKPOINT_S = 1.0
JOURNAL = "profiles.jsonl"
LEGACY = "profiles.json"


def profiles_path(settings: Settings) -> Path:
    return routing_dir(settings) / JOURNAL


@dataclass
class Outcome:
    model: str
    answer: str | None
    latency_s: float
    error: str | None = None
    calls: int = 1
    tokens: int | None = None  # prompt + completion tokens (estimated by replay providers)


async def ask_model(ctx: Context, model: ModelConfig, task_messages: list[dict[str, str]],
                    labels: tuple[str, ...], *, task_id: str | None = None,
                    temperature: float | None = None) -> Outcome:
    """One vote from one model through the engine's one ask path; a failure is an Outcome
    with ``error`` set. The task id reaches replay providers only (see ``ask.Asker``)."""
    reply = await ctx.asker.ask(model, task_messages, labels=labels, task_id=task_id,
                                   temperature=temperature)
    if not reply.ok:
        return Outcome(model.alias, None, reply.latency_s or 0.0, error=reply.error)
    tokens = (None if reply.prompt_tokens is None and reply.tokens is None
              else (reply.prompt_tokens or 0) + (reply.tokens or 0))
    return Outcome(model.alias, reply.answer, reply.latency_s or 0.0, tokens=tokens)


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class ProfileStore:
    """The profile journal, replayed into memory; ``append`` adds records to both."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prompts: dict[str, dict[str, Any]] = {}
        #: model -> key -> {"answers": [...], "latency_s": [...], "trials": [...]}
        self.items: dict[str, dict[str, dict[str, list[Any]]]] = {}
        self.records = 0  # lines in the journal
        self.dropped = 0  # answer lines a later drop record made dead
        self.size = 0  # bytes of the journal read or written by this process
        if not path.exists() and (path.parent / LEGACY).exists():
            self._migrate(path.parent / LEGACY)
        self._load()

    @classmethod
    def for_settings(cls, settings: Settings) -> "ProfileStore":
        return cls(profiles_path(settings))

    @property
    def data(self) -> dict[str, Any]:
        """The profile in the shape of the version-1 file (read-only view)."""
        return {"version": 2, "prompts": self.prompts,
                "models": {m: {"items": items} for m, items in self.items.items()}}

    # -- the journal -----------------------------------------------------------------------
    def _load(self) -> None:
        try:
            raw = storage.read_bytes(self.path)
        except FileNotFoundError:
            return
        self.size = len(raw)
        lines = raw.split(b"\n")
        try:  # one parse for the whole file (fast); line by line only if a line is bad
            records = json.loads(b"[" + b",".join(x for x in lines if x.strip()) + b"]")
        except ValueError:
            records = []
            last = max((i for i, x in enumerate(lines) if x.strip()), default=-1)
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError:
                    if i != last:  # a torn last line is an interrupted append: not an error
                        storage.warn(f"warning: {self.path} line {i + 1} is not JSON; skipped")
        for rec in records:
            self._apply(rec)
        self.records = len(records)

    def _apply(self, rec: Any) -> None:
        if not isinstance(rec, dict):
            return
        if "m" in rec:
            item = self.items.setdefault(rec["m"], {}).get(rec["k"])
            if item is None:
                item = self.items[rec["m"]][rec["k"]] = {"answers": [], "latency_s": [], "trials": [],
                                                          "tokens": []}
            item["answers"].append(rec.get("a"))
            item["latency_s"].append(rec.get("s"))
            item["trials"].append(rec.get("t", 0))
            item["tokens"].append(rec.get("u"))
        elif "p" in rec:
            self.prompts[rec["p"]] = {"id": rec.get("id"), "text": rec.get("text"),
                                      "label": rec.get("label"), "category": rec.get("category"),
                                      "answers": rec.get("answers")}
        elif "drop" in rec:
            keys = rec["drop"].get("keys") or []
            for model in rec["drop"].get("models") or []:
                items = self.items.get(model)
                if items:
                    for key in keys:
                        gone = items.pop(key, None)
                        if gone:
                            self.dropped += len(gone["answers"])

    def append(self, records: Sequence[dict[str, Any]], *, sync: bool = False) -> None:
        """Append records to the journal (under the lock) and to the in-memory profile."""
        if not records:
            return
        data = "".join(_dumps(r) + "\n" for r in records).encode("utf-8")
        with storage.locked(self.path):
            # 0600 like every file of the home (it holds the question texts); a line torn by a
            # killed process is closed first.
            written = storage.append_bytes(self.path, data, sync=sync, mend_torn_line=True)
        self.size += written
        for rec in records:
            self._apply(rec)
        self.records += len(records)

    def compact(self) -> bool:
        """Rewrite the journal without dead records when they outnumber the live ones."""
        if self.dropped < 1000 or self.dropped < self.records - self.dropped:
            return False
        with storage.locked(self.path):
            fresh = ProfileStore(self.path)  # what is on disk now (others may have appended)
            lines = [_dumps({"p": k, **p}) for k, p in fresh.prompts.items()]
            for model, items in fresh.items.items():
                for key, item in items.items():
                    lines += [_dumps({"m": model, "k": key, "t": t, "a": a, "s": s, "u": u})
                              for a, s, t, u in zip(item["answers"], item["latency_s"],
                                                    item["trials"], item["tokens"])]
            storage.atomic_write_text(self.path, "".join(x + "\n" for x in lines))
        ProfileStore.__init__(self, self.path)  # re-read the compacted journal
        return True

    def _migrate(self, legacy: Path) -> None:
        """Convert a version-1 ``profiles.json`` into the journal (the old file is kept aside)."""
        doc = storage.read_json(legacy)
        records: list[dict[str, Any]] = [{"p": k, **p} for k, p in (doc.get("prompts") or {}).items()]
        for model, entry in (doc.get("models") or {}).items():
            for key, item in (entry.get("items") or {}).items():
                records += [{"m": model, "k": key, "t": t, "a": a, "s": s}
                            for t, (a, s) in enumerate(zip(item["answers"], item["latency_s"]))]
        with storage.locked(self.path):
            if not self.path.exists():
                storage.atomic_write_text(self.path, "".join(_dumps(r) + "\n" for r in records))
                os.replace(legacy, legacy.with_name(LEGACY + ".v1"))

    # -- reading ---------------------------------------------------------------------------
    def trials_done(self, model: str, key: str) -> int:
        item = self.items.get(model, {}).get(key)
        return max(item["trials"]) + 1 if item and item["trials"] else 0

    def models(self) -> list[str]:
        return sorted(m for m, items in self.items.items() if items)

    def observations(self, model: str, keys: Iterable[str] | None = None) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(key, prompt, item) for a model's profiled prompts (optionally only ``keys``)."""
        items = self.items.get(model, {})
        wanted = set(keys) if keys is not None else None
        out = []
        for key, item in items.items():
            if wanted is not None and key not in wanted:
                continue
            prompt = self.prompts.get(key)
            if prompt is None or not item["answers"]:
                continue
            out.append((key, prompt, item))
        return out

    def error_rates(self, model: str, keys: Iterable[str] | None = None) -> dict[str, float]:
        """Per prompt: the share of trials that did not give the gold label."""
        return {key: sum(a != prompt["label"] for a in item["answers"]) / len(item["answers"])
                for key, prompt, item in self.observations(model, keys)}


async def run_profile(ctx: Context, tasks: Sequence[Task], models: Sequence[ModelConfig], *,
                      trials: int = 1, resume: bool = False,
                      on_progress: Callable[[int, int], None] | None = None,
                      concurrency: int | None = None) -> dict[str, int]:
    """Ask every model every task ``trials`` times; store the answers. Returns counts.

    With ``resume`` the trials already stored are skipped, so re-running after an interruption
    or after adding a model asks only what is missing.
    """
    if trials < 1:
        raise UsageError("--trials must be at least 1")
    store = ProfileStore.for_settings(ctx.settings)
    store.compact()
    jobs: list[tuple[ModelConfig, Task, int]] = []
    for model in models:
        for task in tasks:
            done = store.trials_done(model.alias, task.key) if resume else 0
            jobs.extend((model, task, t) for t in range(done, trials))
    header: list[dict[str, Any]] = []
    if not resume:
        # A fresh profile of these models on these prompts replaces what was stored.
        keys = list(dict.fromkeys(t.key for t in tasks))
        stored = [m.alias for m in models if any(k in store.items.get(m.alias, ()) for k in keys)]
        if stored:
            header.append({"drop": {"models": stored, "keys": keys}})
    for t in tasks:
        prompt = {"id": t.id, "text": t.text, "label": t.label, "category": t.category,
                  "answers": list(t.answers)}
        if store.prompts.get(t.key) != prompt:
            header.append({"p": t.key, **prompt})
    store.append(header)
    pending: list[dict[str, Any]] = []
    counts = {"asked": 0, "failed": 0, "skipped": sum(len(tasks) * trials for _ in models) - len(jobs)}
    base_temp = float(ctx.settings.get("temperature"))
    total = len(jobs)
    finished = 0

    last_flush = [time.monotonic()]

    def flush(sync: bool = False) -> None:
        if pending:
            store.append(pending, sync=sync)
            pending.clear()
        last_flush[0] = time.monotonic()

    async def one(model: ModelConfig, task: Task, trial: int) -> None:
        nonlocal finished
        temp = base_temp if trial == 0 else max(base_temp, TRIAL_TEMPERATURE)
        out = await ask_model(ctx, model, task.messages(), task.answers, task_id=task.id,
                              temperature=temp)
        counts["asked"] += 1
        if out.error is not None:
            counts["failed"] += 1
        else:
            pending.append({"m": model.alias, "k": task.key, "t": trial, "a": out.answer,
                            "s": round(out.latency_s, 4), "u": out.tokens})
        finished += 1
        if on_progress is not None:
            on_progress(finished, total)
        if len(pending) >= SAVE_EVERY or time.monotonic() - last_flush[0] >= CHECKPOINT_S:
            flush()

    stopping = False

    async def worker(queue: Iterator[tuple[ModelConfig, Task, int]]) -> None:
        nonlocal stopping
        for job in queue:  # one shared iterator: each job is taken by exactly one worker
            if stopping:  # another worker failed or was interrupted: take no new job
                return
            try:
                await one(*job)
            except BaseException:
                stopping = True
                raise

    # Trials of one prompt run in order so that trial 2 is appended after trial 1.
    by_trial: dict[int, list[tuple[ModelConfig, Task, int]]] = {}
    for job in jobs:
        by_trial.setdefault(job[2], []).append(job)
    width = max(1, int(concurrency or ctx.settings.get("batch_concurrency")))
    try:
        for trial in sorted(by_trial):
            queue = iter(by_trial[trial])
            workers = [asyncio.create_task(worker(queue)) for _ in range(min(width, len(by_trial[trial])))]
            try:
                await asyncio.gather(*workers)
            except BaseException:  # one failed or we were cancelled: stop the others first
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
    finally:
        flush(sync=True)
    return counts


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return float(np.percentile(np.asarray(values), q))


def summarize(store: ProfileStore, models: Sequence[str], settings: Settings,
              clusters: ClusterModel | None = None, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """Per-model accuracy, stability, latency, cost, no-answer rate; error correlation; Ψ.

    ``stability`` (the share of prompts answered the same way in every trial) is measured on
    the prompts with answers from two trials or more, and is ``None`` when there is none (a
    profile with ``--trials 1``: two answers to one prompt then only mean the prompt appears
    twice in the task file, which says nothing about the model's stability).
    """
    keys = list(keys) if keys is not None else None
    report: dict[str, Any] = {"models": {}, "error_correlation": {}, "clusters": None}
    errors: dict[str, dict[str, float]] = {}
    for m in models:
        obs = store.observations(m, keys)
        if not obs:
            continue
        answers = [a for _, _, item in obs for a in item["answers"]]
        correct = [sum(a == p["label"] for a in item["answers"]) / len(item["answers"]) for _, p, item in obs]
        multi = [item["answers"] for _, _, item in obs if len(set(item["trials"])) > 1]
        latencies = [x for _, _, item in obs for x in item["latency_s"] if x is not None]
        model_cfg = settings.models.get(m)
        tokens = [u for _, _, item in obs for u in item.get("tokens", []) if u is not None]
        # USD per answer: the mean tokens of an answer at the model's price per million tokens.
        per_item = (statistics.mean(tokens) * model_cfg.cost / 1e6
                    if tokens and model_cfg is not None and model_cfg.cost else None)
        accuracy = sum(correct) / len(correct)
        errors[m] = {k: 1.0 - c for (k, _, _), c in zip(obs, correct)}
        report["models"][m] = {
            "items": len(obs), "trials": len(answers),
            "accuracy": round(accuracy, 4),
            "stability": round(sum(len(set(a)) == 1 for a in multi) / len(multi), 4) if multi else None,
            "no_answer_rate": round(sum(a is None for a in answers) / len(answers), 4),
            "latency_median_s": round(statistics.median(latencies), 4) if latencies else None,
            "latency_p90_s": round(_percentile(latencies, 90) or 0.0, 4) if latencies else None,
            "cost": model_cfg.cost if model_cfg else None,
            "tokens_per_item": round(statistics.mean(tokens), 1) if tokens else None,
            "cost_usd_per_item": None if per_item is None else round(per_item, 8),
            # correct answers per dollar: how far a dollar goes with this model
            "accuracy_per_usd": None if not per_item else round(accuracy / per_item, 1),
        }
    report["error_correlation"] = _error_correlation(errors)
    names = list(errors)
    if clusters is not None and names:
        router = build_router(store, settings, clusters, models=names, keys=keys)
        report["clusters"] = {"k": clusters.k, "psi": {m: [round(float(v), 4) for v in router.psi[m]]
                                                        for m in names},
                              "n": {m: [int(v) for v in router.counts[m]] for m in names}}
    return report


def _error_correlation(errors: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Pearson correlation (phi for 0/1 errors) of every pair on the prompts both answered."""
    names = list(errors)
    all_keys = sorted({k for e in errors.values() for k in e})
    index = {k: i for i, k in enumerate(all_keys)}
    x = np.full((len(names), len(all_keys)), np.nan)
    for row, m in enumerate(names):
        cols = [index[k] for k in errors[m]]
        x[row, cols] = list(errors[m].values())
    seen = ~np.isnan(x)
    out: dict[str, Any] = {}
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            both = seen[i] & seen[j]
            n = int(both.sum())
            if n < 3:
                continue
            xa, xb = x[i, both], x[j, both]
            corr = None if xa.std() == 0 or xb.std() == 0 else round(float(np.corrcoef(xa, xb)[0, 1]), 4)
            out[f"{a}|{b}"] = {"models": [a, b], "items": n, "phi": corr}
    return out


def build_router(store: ProfileStore, settings: Settings, clusters: ClusterModel | None, *,
                 models: Sequence[str] | None = None, keys: Iterable[str] | None = None,
                 smoothing: float | None = None) -> Router:
    """Ψ for every profiled model (only the configured ones unless ``models`` is given).

    Each profiled prompt's cluster comes from the assignment cache next to the profile
    (:class:`PromptClusters`): only prompts never seen with these clusters are embedded.
    """
    names = list(models) if models is not None else [m for m in store.models() if m in settings.models]
    keys = list(keys) if keys is not None else None
    rates = {m: store.error_rates(m, keys) for m in names}
    needed = {k for r in rates.values() for k in r}
    assigned = PromptClusters.for_store(store).assign(clusters, store, needed)
    obs = {m: (np.array([assigned.get(k, 0) for k in r], dtype=int), np.fromiter(r.values(), float, len(r)))
           for m, r in rates.items()}
    costs = {m: (settings.models[m].cost if m in settings.models else 0.0) for m in names}
    if smoothing is None:  # the strength chosen for this profile (tune_smoothing), if any
        smoothing = read_knobs(store.path.parent).get("smoothing")
    kwargs = {} if smoothing is None else {"smoothing": float(smoothing)}
    return router_from_assignments(clusters, obs, costs, **kwargs)


def tune_smoothing(store: ProfileStore, settings: Settings, clusters: ClusterModel | None, *,
                   models: Sequence[str] | None = None) -> dict[str, Any]:
    """Choose Ψ's shrinkage strength on the stored observations (cross-fitted, see
    ``router.choose_smoothing``) and store it in ``knobs.json``: every later router uses it."""
    names = list(models) if models is not None else [m for m in store.models() if m in settings.models]
    rates = {m: store.error_rates(m) for m in names}
    needed = {k for r in rates.values() for k in r}
    assigned = PromptClusters.for_store(store).assign(clusters, store, needed)
    obs = {m: (np.array([assigned.get(k, 0) for k in r], dtype=int), np.fromiter(r.values(), float, len(r)))
           for m, r in rates.items() if r}
    k = clusters.k if clusters is not None else 1
    best, scores = choose_smoothing(obs, k)
    knobs = {**read_knobs(store.path.parent), "smoothing": best,
             "smoothing_log_loss": {str(s): round(v, 6) for s, v in scores.items()},
             "smoothing_observations": int(sum(len(o[0]) for o in obs.values())),
             "clusters": clusters.fingerprint if clusters is not None else None}
    write_knobs(store.path.parent, knobs)
    return knobs


class PromptClusters:
    """``<data>/routing/prompt_clusters.json``: the cluster of every profiled prompt.

    Routing needs, for each profiled prompt, the cluster its embedding falls in. Computing it
    means embedding the prompt (the slow part of building a router: milliseconds per prompt),
    so it is cached on disk next to the profile, keyed by prompt key and by the fingerprint of
    the fitted clusters (``ClusterModel.fingerprint``: a refit changes the embedder and the
    centroids, so every prompt is assigned again). Prompts profiled later are embedded once,
    when a router first needs them. The cache is only an accelerator: deleting it is harmless.
    """

    NAME = "prompt_clusters.json"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.embedded = 0  # prompts this process had to embed (the rest came from the cache)

    @classmethod
    def for_store(cls, store: ProfileStore) -> "PromptClusters":
        return cls(store.path.parent / cls.NAME)

    def assign(self, clusters: ClusterModel | None, store: ProfileStore,
               keys: Iterable[str]) -> dict[str, int]:
        keys = [k for k in keys if k in store.prompts]
        if clusters is None or not keys:
            return {k: 0 for k in keys}
        fingerprint = clusters.fingerprint
        cached: dict[str, int] = {}
        if fingerprint is not None:
            doc = storage.read_json(self.path)
            if doc.get("clusters") == fingerprint:
                cached = doc.get("assign") or {}
        missing = [k for k in keys if k not in cached]
        if missing:
            ids = clusters.assign([store.prompts[k]["text"] for k in missing])
            new = {k: int(c) for k, c in zip(missing, ids)}
            self.embedded += len(missing)
            cached = {**cached, **new}
            if fingerprint is not None:
                def change(doc: dict[str, Any]) -> None:
                    if doc.get("clusters") != fingerprint:
                        doc.clear()
                        doc["clusters"] = fingerprint
                    doc.setdefault("assign", {}).update(new)

                storage.update_json(self.path, change)
        return {k: int(cached[k]) for k in keys}


def load_router(settings: Settings, *, models: Sequence[str] | None = None) -> Router | None:
    """The router from the stored clusters and profiles; None when nothing is profiled."""
    store = ProfileStore.for_settings(settings)
    names = [m for m in (models or store.models()) if m in settings.models and store.observations(m)]
    if not names:
        return None
    return build_router(store, settings, ClusterModel.load(routing_dir(settings), settings), models=names)
