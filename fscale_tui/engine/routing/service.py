"""Routing as the views see it (``engine.routing``): fit clusters, report profiles, route.

Blocking (numpy and the profile journal); the CLI calls it directly. Profiling and calibration
ask models, so they are async methods of the Engine itself (``engine.profile``,
``engine.calibrate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..base.errors import UsageError
from ..base.settings import Settings
from .profile import ProfileStore, load_router, summarize, tune_smoothing
from .router import ClusterModel, describe, read_knobs, routing_dir
from .tasks import load_tasks

NO_PROFILE = ("no profiled model: run 'fscale profile --fit-clusters TRAIN.jsonl' and "
              "'fscale profile VAL.jsonl --models …' first")


class Routing:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def directory(self) -> Path:
        """Where clusters, profiles and the calibration live."""
        return routing_dir(self.settings)

    def fit_clusters(self, path: str, k: int, embedding: str, *,
                     on_progress: Callable[[int, int], None] | None = None,
                     emit: Callable[[Any], None] | None = None) -> dict[str, Any]:
        """Embed a training task file's prompts and fit K clusters (stored for later runs).

        A ``local:<alias>`` embedding embeds through the local model's embedding server:
        ``on_progress(done, total)`` counts the prompts, ``emit`` gets the server's first-use
        events; vectors are cached, so a task file is embedded once."""
        if k < 1:
            raise UsageError("--clusters must be at least 1")
        train = load_tasks(path)
        model = ClusterModel.fit([t.text for t in train], k, embedding=embedding,
                                 settings=self.settings, on_progress=on_progress, emit=emit)
        model.meta["source"] = path
        model.save(self.directory)
        out = {"clusters": model.k, "embedding": embedding, "prompts": len(train)}
        stats = getattr(model.embedder, "stats", None)
        if stats:
            out["embedded"] = {"cached": stats["cached"], "new": stats["embedded"],
                               "tokens": stats["tokens"], "seconds": round(stats["seconds"], 2)}
        return out

    def tune(self, models: Sequence[str] | None = None) -> dict[str, Any]:
        """Choose Ψ's shrinkage on the stored profile (cross-fitted) and keep it for routing."""
        store = ProfileStore.for_settings(self.settings)
        return tune_smoothing(store, self.settings, ClusterModel.load(self.directory, self.settings),
                              models=list(models) if models else None)

    def replan(self) -> dict[str, Any] | None:
        """Plan ``-k auto`` (and the router's budgets) on the stored profile now and keep it
        (``routing/plans.json``); -> a summary, or None when nothing is profiled."""
        from .planner import plans_for_profile

        plans = plans_for_profile(self.settings)
        if plans is None:
            return None
        d = plans.plans[plans.default]
        return {"items": plans.items, "unit": plans.unit, "plans": len(plans.plans),
                "default": {"plan": d.label(), "accuracy": round(d.accuracy, 4),
                            "cost": d.cost, "calls": round(d.calls, 3),
                            "relative_cost": (round(d.cost / plans.best_single["cost"], 4)
                                              if plans.best_single["cost"] else None)},
                "best_single": plans.best_single, "seconds": round(plans.seconds, 2)}

    def frontier(self) -> dict[str, Any] | None:
        """Accuracy against price of singles, top-k majorities, the router, the ``-k auto``
        plans and the stored calibration, on the profile (``frontier.frontier``)."""
        from .frontier import frontier

        return frontier(self.settings)

    def knobs(self) -> dict[str, Any]:
        """The knobs chosen for the stored profile (Ψ's shrinkage; empty until profiled)."""
        return read_knobs(self.directory)

    def report(self, models: Sequence[str] | None = None,
               keys: Sequence[str] | None = None) -> dict[str, Any]:
        """Accuracy, stability, latency, cost, correlation and Ψ of profiled models (all of
        them, or ``models``; on every stored prompt, or ``keys``)."""
        store = ProfileStore.for_settings(self.settings)
        names = list(models) if models else store.models()
        return summarize(store, names, self.settings, ClusterModel.load(self.directory, self.settings),
                         list(keys) if keys is not None else None)

    def router(self, models: Sequence[str] | None = None) -> Any:
        router = load_router(self.settings, models=list(models) if models else None)
        if router is None:
            raise UsageError(NO_PROFILE)
        return router

    def budget_lambdas(self, budget: Any) -> dict[str, Any]:
        """The router's λ for a budget (``planner.PlanSet.route_budget``: two adjacent λ
        whose spends, as the router runs, bracket it and the share of prompts routed with
        the first) plus what the JSON reports about it."""
        from .planner import load_plans

        plans = load_plans(self.settings)
        if plans is None:
            raise UsageError(NO_PROFILE)
        mix = plans.route_budget(budget)
        usd = plans.unit == "usd"
        return {**mix, "budget": {**budget.to_dict(), "amount": mix["amount"], "unit": plans.unit,
                                  "relative_to": plans.best_single["model"],
                                  "best_single_cost": plans.best_single["cost"]},
                "expected_cost_usd": mix["expected_cost"] if usd else None}

    def route(self, text: str, lam: float = 0.0, models: Sequence[str] | None = None,
              budget: Any = None) -> tuple[dict[str, Any], str, bool]:
        """-> (the choice as JSON, why in words, whether clusters are fitted). With a
        ``budget`` λ comes from the profile (see :meth:`budget_lambdas`)."""
        router = self.router(models)
        extra: dict[str, Any] = {}
        if budget is not None:
            extra, lams = self._budgeted(budget, models, [text])
            lam = lams[0]
        choice = router.route(text, lam)
        return {**choice.to_dict(), "lambda": lam, **extra}, describe(choice, lam), \
            router.clusters is not None

    def route_many(self, texts: Sequence[str], lam: float = 0.0,
                   models: Sequence[str] | None = None, budget: Any = None
                   ) -> tuple[list[dict[str, Any]], bool]:
        """Many prompts with the router loaded (and the prompts embedded) once."""
        router = self.router(models)
        texts = list(texts)
        if budget is None:
            return ([{**c.to_dict(), "lambda": lam} for c in router.route_many(texts, lam, None)],
                    router.clusters is not None)
        extra, lams = self._budgeted(budget, models, texts)
        out: list[dict[str, Any]] = [{} for _ in texts]
        for value in sorted(set(lams)):
            idx = [i for i, x in enumerate(lams) if x == value]
            for i, c in zip(idx, router.route_many([texts[i] for i in idx], value, None)):
                out[i] = {**c.to_dict(), "lambda": value, **extra}
        return out, router.clusters is not None

    def _budgeted(self, budget: Any, models: Sequence[str] | None,
                  texts: Sequence[str]) -> tuple[dict[str, Any], list[float]]:
        from .planner import takes_first

        if models:
            raise UsageError("--budget plans over every profiled model: drop --models")
        mix = self.budget_lambdas(budget)
        (la, lb), p = mix["lambdas"], mix["p"]
        extra = {"budget": mix["budget"], "expected_cost_usd": mix["expected_cost_usd"],
                 "expected_accuracy": round(mix["expected_accuracy"], 4)}
        return extra, [la if takes_first(t, p) else lb for t in texts]
