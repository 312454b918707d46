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
from .router import ClusterModel, RouteChoice, describe, read_knobs, routing_dir
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
        out: dict[str, Any] = {"clusters": model.k, "embedding": embedding, "prompts": len(train)}
        out.update(self._fit_classifier(model, train))
        stats = getattr(model.embedder, "stats", None)
        if stats:
            out["embedded"] = {"cached": stats["cached"], "new": stats["embedded"],
                               "tokens": stats["tokens"], "seconds": round(stats["seconds"], 2)}
        return out

    def _fit_classifier(self, model: ClusterModel, train: Sequence[Any]) -> dict[str, Any]:
        """When the training prompts carry categories, the classifier that gives prompts
        without one a category (``categories.Classifier``), kept beside the clusters."""
        from .categories import FILE, Classifier

        path = self.directory / FILE
        classifier = None
        if model.fingerprint is not None and sum(1 for t in train if t.category) > 0:
            classifier = Classifier.fit(model.embed([t.text for t in train]),
                                        [t.category for t in train], [t.key for t in train],
                                        model.fingerprint)
        if classifier is None:
            path.unlink(missing_ok=True)
            return {}
        classifier.save(self.directory)
        hits = sum(classifier.known[t.key] == classifier.categories.index(t.category)
                   for t in train if t.category)
        return {"categories": {"known": len(classifier.categories), "alpha": classifier.alpha,
                               "cross_fitted_accuracy": round(hits / len(classifier.known), 4)}}

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

    def budget_lambdas(self, budget: Any, curve: Sequence[dict[str, float]] | None = None
                       ) -> dict[str, Any]:
        """The router's λ for a budget (``planner.PlanSet.route_budget``: two adjacent λ
        whose spends, as the router runs, bracket it and the share of prompts routed with
        the first) plus what the JSON reports about it. ``curve``: another router's spend
        curve (the category router's) instead of the clusters'."""
        from .planner import load_plans, spend_mix

        plans = load_plans(self.settings)
        if plans is None:
            raise UsageError(NO_PROFILE)
        if curve is None:
            mix = plans.route_budget(budget)
        else:
            mix = spend_mix(curve, budget.amount(float(plans.best_single["cost"]), plans.unit))
        usd = plans.unit == "usd"
        return {**mix, "budget": {**budget.to_dict(), "amount": mix["amount"], "unit": plans.unit,
                                  "relative_to": plans.best_single["model"],
                                  "best_single_cost": plans.best_single["cost"]},
                "expected_cost_usd": mix["expected_cost"] if usd else None}

    def route(self, text: str, lam: float = 0.0, models: Sequence[str] | None = None,
              budget: Any = None, category: str | None = None) -> tuple[dict[str, Any], str, bool]:
        """-> (the choice as JSON, why in words, whether clusters are fitted). With a
        ``budget`` λ comes from the profile (see :meth:`budget_lambdas`). A ``category`` the
        profile knows routes by category (``routing.categories``)."""
        out, fitted = self.route_many([text], lam, models, budget, [category])
        choice = out[0]
        ranked = RouteChoice(choice["cluster"], choice["ranking"])
        return choice, describe(ranked, choice["lambda"]), fitted

    def route_many(self, texts: Sequence[str], lam: float = 0.0,
                   models: Sequence[str] | None = None, budget: Any = None,
                   categories: Sequence[str | None] | None = None
                   ) -> tuple[list[dict[str, Any]], bool]:
        """Many prompts with the router loaded (and the prompts embedded) once. A prompt
        whose category (``categories[i]``) the profile knows is routed by the category router
        (``routing.categories``; its own λ for a budget), every other by the clusters."""
        router = self.router(models)
        texts = list(texts)
        out: list[dict[str, Any]] = [{} for _ in texts]
        given = list(categories) if categories is not None else [None] * len(texts)
        from . import categories as bycat

        # The category router is loaded when a prompt says its category or one can be predicted.
        found = (bycat.load(self.settings)
                 if any(given) or (self.directory / bycat.FILE).exists() else None)
        # prompt -> (category index, routed by the given category or the predicted one)
        by_cat: dict[int, tuple[int, str]] = {}
        if found is not None:
            for i, c in enumerate(given):
                j = found.router.category_index(c)
                if j is not None:
                    by_cat[i] = (j, "category")
            todo = [i for i in range(len(texts)) if i not in by_cat]
            for i, c in zip(todo, found.predict(router.clusters, [texts[i] for i in todo])):
                j = found.router.category_index(c)
                if j is not None:
                    by_cat[i] = (j, "predicted-category")
        rest = [i for i in range(len(texts)) if i not in by_cat]
        lams = [lam] * len(texts)
        extras: dict[str, dict[str, Any]] = {"clusters": {}, "category": {}, "predicted-category": {}}
        if budget is not None:
            assert found is not None or not by_cat
            for how, curve in (("clusters", None),
                               ("category", found.curve if found else None),
                               ("predicted-category", found.text_curve if found else None)):
                idx = rest if how == "clusters" else [i for i in by_cat if by_cat[i][1] == how]
                if idx:
                    extras[how], values = self._budgeted(budget, models, [texts[i] for i in idx], curve)
                    for i, value in zip(idx, values):
                        lams[i] = value
        if by_cat:
            assert found is not None
            names = list(models) if models else None
            ranked: dict[tuple[int, float, str], RouteChoice] = {}
            for i, (j, how) in by_cat.items():
                key = (j, lams[i], how)
                if key not in ranked:
                    use = found.text_router if how == "predicted-category" else found.router
                    assert use is not None
                    ranked[key] = use.rank(j, lams[i], names)
                out[i] = {**ranked[key].to_dict(), "lambda": lams[i], "routed_by": how,
                          "category": found.router.categories[j] if found.router.categories else None,
                          **extras[how]}
        for value in sorted({lams[i] for i in rest}):
            idx = [i for i in rest if lams[i] == value]
            for i, c in zip(idx, router.route_many([texts[i] for i in idx], value, None)):
                out[i] = {**c.to_dict(), "lambda": value, "routed_by": "clusters", **extras["clusters"]}
        return out, router.clusters is not None

    def _budgeted(self, budget: Any, models: Sequence[str] | None, texts: Sequence[str],
                  curve: Sequence[dict[str, float]] | None = None
                  ) -> tuple[dict[str, Any], list[float]]:
        from .planner import takes_first

        if models:
            raise UsageError("--budget plans over every profiled model: drop --models")
        mix = self.budget_lambdas(budget, curve)
        (la, lb), p = mix["lambdas"], mix["p"]
        extra = {"budget": mix["budget"], "expected_cost_usd": mix["expected_cost_usd"],
                 "expected_accuracy": round(mix["expected_accuracy"], 4)}
        return extra, [la if takes_first(t, p) else lb for t in texts]
