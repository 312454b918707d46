"""Routing as the views see it (``engine.routing``): fit clusters, report profiles, route.

Blocking (numpy and the profile journal); the CLI calls it directly. Profiling and calibration
ask models, so they are async methods of the Engine itself (``engine.profile``,
``engine.calibrate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .profile import ProfileStore, load_router, summarize, tune_smoothing
from .router import ClusterModel, describe, read_knobs, routing_dir
from .tasks import load_tasks

NO_PROFILE = ("no profiled model: run 'fscale profile --fit-clusters TRAIN.jsonl' and "
              "'fscale profile VAL.jsonl --models …' first")


class Routing:
    def __init__(self, settings: Any) -> None:
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

    def route(self, text: str, lam: float = 0.0, models: Sequence[str] | None = None
              ) -> tuple[dict[str, Any], str, bool]:
        """-> (the choice as JSON, why in words, whether clusters are fitted)."""
        router = self.router(models)
        choice = router.route(text, lam)
        return choice.to_dict(), describe(choice, lam), router.clusters is not None

    def route_many(self, texts: Sequence[str], lam: float = 0.0,
                   models: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Many prompts with the router loaded (and the prompts embedded) once."""
        router = self.router(models)
        return ([c.to_dict() for c in router.route_many(list(texts), lam, None)],
                router.clusters is not None)
