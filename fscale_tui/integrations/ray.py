"""fscale on Ray Data: run scale / generate over a Dataset where the data already lives.

::

    import ray
    from fscale_tui.integrations.ray import scale_dataset

    ds = ray.data.read_parquet("s3://bucket/items/")          # a "question" column (+ "id")
    out = scale_dataset(ds, answers=["YES", "NO"], k=3, actors=8)
    out.write_parquet("s3://bucket/labels/")

How it runs: ``map_batches`` over a pool of actors (:class:`FscaleActor`); each actor owns one
fscale :class:`~fscale_tui.engine.session.Engine` and one event loop for its whole life, and runs
each batch with ``Engine.scale_batch`` / ``generate_batch`` (``item_concurrency`` items in flight
per actor). Output rows keep the input's order and columns and add ``answer`` (``output`` for
generate), ``confidence``, ``status``, ``votes`` (JSON), ``calls_made``, ``item_id`` and
``error``.

What holds across the job:

* **Rate limits**: every actor's HTTP client takes its tokens from the coordination backend
  (:mod:`fscale_tui.engine.wire.coordination`): Redis when ``FSCALE_REDIS_URL`` / ``[fleet]
  redis_url`` is set (fleet-wide, every host), else the state directory (actors on one machine).
* **The call log**: actors do not write it. Each row carries its call-log record back to the
  driver, which writes them once into its own log (so ``fscale history`` and the ratings see
  the whole job) and drops that column.
* **Settings**: the driver's ``FSCALE_*`` variables and the providers' key variables are handed
  to each actor (a remote cluster's workers do not share the driver's environment).

Requires the ``[ray]`` extra (a pinned Ray). Nothing else in fscale imports this module.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.base.settings import Settings
    from ..engine.session import Engine

#: Columns this module adds (plus the private call-log column, removed before returning).
SCALE_COLUMNS = ("answer", "confidence", "status", "votes", "calls_made", "item_id", "error")
GENERATE_COLUMNS = ("output", "status", "strategy", "calls_made", "item_id", "error")
_CALLS = "_fscale_calls"
#: Items per block of a CLI batch (``run_requests``): the granularity of streamed results.
BLOCK_ITEMS = 64
_REQUEST = "_fscale_request"
_RESULT = "_fscale_result"


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise ImportError("fscale's Ray integration needs Ray: pip install 'fscale[ray]'") from exc
    return ray


def worker_env(settings: Settings | None = None) -> dict[str, str]:
    """The environment an actor needs: FSCALE_* and the configured providers' key variables."""
    env = dict(os.environ)
    names = {k for k in env if k.startswith("FSCALE_")}
    if settings is not None:
        names |= {p.api_key_env for p in settings.providers.values() if p.api_key_env}
    return {k: env[k] for k in sorted(names) if k in env}


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """``ray.init`` unless Ray is already up: ``address`` None/"local" starts a local cluster."""
    ray = _ray()
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address and address != "local":
            ray.init(address=address, **kwargs)
        else:  # a cluster of this machine alone: it needs nothing but loopback
            ray.init(num_cpus=num_cpus or min(4, os.cpu_count() or 2),
                     _node_ip_address="127.0.0.1", **kwargs)
    return ray


class FscaleActor:
    """One engine and one event loop per actor; ``__call__`` runs one batch of rows."""

    def __init__(self, kind: str, env: dict[str, str], overrides: dict[str, Any],
                 spec: dict[str, Any], item_concurrency: int | None) -> None:
        os.environ.update(env)
        self.kind = kind
        self.overrides = overrides
        self.spec = spec
        self.item_concurrency = item_concurrency
        self.loop = asyncio.new_event_loop()
        self.engine: Engine | None = None
        self.captured: list[tuple[Any, bool]] = []

    def _engine(self) -> Engine:
        if self.engine is None:
            from ..engine.catalog.config import load_settings
            from ..engine.session import Engine

            settings = load_settings().with_overrides(**self.overrides)
            self.engine = Engine(settings)
            self.engine.capture_calls(lambda record, learn: self.captured.append((record, learn)))
        return self.engine

    # -- rows -> requests ------------------------------------------------------------------
    def _requests(self, batch: dict[str, Any], n: int) -> list[Any]:
        if _REQUEST in batch:  # the CLI's path: requests built (and validated) by the driver
            return [pickle.loads(b) for b in batch[_REQUEST]]
        spec = self.spec
        out: list[Any] = []
        col = spec["question_column"]
        for i in range(n):
            try:
                row = {k: _plain(v[i]) for k, v in batch.items()}
                item_id = row.get(spec["id_column"])
                item_id = None if item_id is None else str(item_id)
                context = row.get(spec["context_column"]) if spec["context_column"] else None
                if self.kind == "scale":
                    from ..engine.requests import scale_request

                    out.append(scale_request(str(row[col]), tuple(spec["answers"]),
                                             context=context, models=spec["models"],
                                             panel=spec["panel"], k=spec["k"],
                                             tie_break=spec["tie_break"], item_id=item_id))
                else:
                    from ..engine.base.calls import GenerateRequest
                    from ..engine.requests import validated

                    out.append(validated(GenerateRequest(
                        question=str(row[col]), context=context, item_id=item_id,
                        **spec["options"])))
            except Exception as exc:  # a bad row is that row's error, not the batch's
                out.append(exc)
        return out

    async def _run(self, requests: list[Any]) -> list[Any]:
        engine = self._engine()
        outcomes: list[Any] = [None] * len(requests)
        runner = engine.scale_batch if self.kind == "scale" else engine.generate_batch
        async for index, outcome in runner(requests, concurrency=self.item_concurrency):
            outcomes[index] = outcome
        return outcomes

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(next(iter(batch.values()))) if batch else 0
        requests = self._requests(batch, n)
        self.captured = []
        outcomes = self.loop.run_until_complete(self._run(requests))
        by_id: dict[str, list[tuple[Any, bool]]] = {}
        for record, learn in self.captured:
            by_id.setdefault(record.id, []).append((record, learn))
        cols: dict[str, list[Any]] = {c: [] for c in
                                      (SCALE_COLUMNS if self.kind == "scale" else GENERATE_COLUMNS)}
        results: list[str | None] = []
        calls: list[bytes] = []
        for req, outcome in zip(requests, outcomes):
            item_id = getattr(req, "item_id", None)
            if isinstance(outcome, Exception) or outcome is None:
                error = str(outcome) if outcome is not None else "no result"
                for c in cols:
                    cols[c].append(None)
                cols["status"][-1], cols["error"][-1] = "error", error
                cols["item_id"][-1], cols["calls_made"][-1] = item_id, 0
                results.append(json.dumps({"schema": 1, "id": None, "item_id": item_id,
                                           "status": "error", "error": error}))
                calls.append(pickle.dumps([]))
                continue
            d = outcome.to_dict()
            results.append(json.dumps(d))
            calls.append(pickle.dumps(by_id.pop(outcome.id, [])))
            if self.kind == "scale":
                cols["answer"].append(outcome.answer)
                cols["confidence"].append(None if outcome.confidence is None
                                          else float(outcome.confidence))
                cols["votes"].append(json.dumps(d.get("votes", [])))
            else:
                cols["output"].append(outcome.output)
                cols["strategy"].append(d.get("strategy"))
            cols["status"].append(outcome.status)
            cols["calls_made"].append(int(outcome.calls_made or 0))
            cols["item_id"].append(item_id)
            cols["error"].append(None)
        out = {k: v for k, v in batch.items() if k != _REQUEST}
        out.update({k: _column(v) for k, v in cols.items()})
        out[_CALLS] = _column(calls)
        if _REQUEST in batch:
            out[_RESULT] = _column(results)
        return out

    def __del__(self) -> None:
        try:
            if self.engine is not None and not self.loop.is_closed():
                self.loop.run_until_complete(self.engine.aclose())
        except Exception:
            pass


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return value.item()
    return value


def _column(values: list[Any]) -> Any:
    import numpy as np

    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _map(ds: Any, kind: str, *, spec: dict[str, Any], actors: int, batch_size: int,
         item_concurrency: int | None, overrides: dict[str, Any], settings: Settings) -> Any:
    ray = _ray()
    out = ds.map_batches(
        FscaleActor, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
        fn_constructor_kwargs={"kind": kind, "env": worker_env(settings),
                               "overrides": overrides, "spec": spec,
                               "item_concurrency": item_concurrency},
        num_cpus=0.25)  # I/O-bound: the waiting is on the provider, not the CPU
    out.context.execution_options.preserve_order = True  # rows come back in input order
    return out


def _write_calls(ds: Any, settings: Settings) -> int:
    """Write the actors' call-log records into the driver's log, once."""
    from ..engine.session import Engine

    def records() -> Iterator[tuple[Any, bool]]:
        for batch in ds.select_columns([_CALLS]).iter_batches(batch_format="numpy",
                                                               batch_size=1024):
            for blob in batch[_CALLS]:
                yield from pickle.loads(blob)

    engine = Engine(settings)
    try:
        return engine.record_calls(records())
    finally:
        engine.close()


def _finish(out: Any, settings: Settings) -> Any:
    out = out.materialize()
    _write_calls(out, settings)
    final = out.drop_columns([_CALLS])
    final.context.execution_options.preserve_order = True
    return final.materialize()


def _settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    if settings is None:
        from ..engine.catalog.config import load_settings

        settings = load_settings()
    return settings.with_overrides(**overrides)


def scale_dataset(ds: Any, *, answers: list[str] | tuple[str, ...] | str, k: int | str | None = None,
                  models: list[str] | tuple[str, ...] | None = None, panel: str | None = None,
                  tie_break: str | None = None, question_column: str = "question",
                  id_column: str = "id", context_column: str | None = "context",
                  actors: int = 2, batch_size: int = 64, item_concurrency: int | None = None,
                  settings: Settings | None = None, **overrides: Any) -> Any:
    """Ask every row's question to the panel and vote; a materialized Dataset with the input's
    columns plus answer, confidence, status, votes (JSON), calls_made, item_id, error.

    ``overrides``: settings to change for the job (e.g. ``challenger=False``)."""
    labels = [a.strip() for a in answers.split(",")] if isinstance(answers, str) else list(answers)
    if context_column and context_column not in ds.schema().names:
        context_column = None
    spec = {"answers": labels, "k": k, "models": tuple(models) if models else None,
            "panel": panel, "tie_break": tie_break, "question_column": question_column,
            "id_column": id_column, "context_column": context_column}
    settings = _settings(settings, overrides)
    out = _map(ds, "scale", spec=spec, actors=actors, batch_size=batch_size,
               item_concurrency=item_concurrency, overrides=overrides, settings=settings)
    return _finish(out, settings)


def generate_dataset(ds: Any, *, question_column: str = "question", id_column: str = "id",
                     context_column: str | None = "context", actors: int = 2,
                     batch_size: int = 16, item_concurrency: int | None = None,
                     settings: Settings | None = None, **options: Any) -> Any:
    """Generate + select for every row (``options``: k, strategy, judges, models, panel, …, as
    ``fscale generate``); adds output, status, strategy, calls_made, item_id, error."""
    if context_column and context_column not in ds.schema().names:
        context_column = None
    spec = {"options": options, "question_column": question_column, "id_column": id_column,
            "context_column": context_column}
    settings = _settings(settings, {})
    out = _map(ds, "generate", spec=spec, actors=actors, batch_size=batch_size,
               item_concurrency=item_concurrency, overrides={}, settings=settings)
    return _finish(out, settings)


class _Result:
    """A result as the CLI's BatchOutput wants it (``to_dict``) from an actor's JSON."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def to_dict(self) -> dict[str, Any]:
        return self.d


def run_requests(kind: str, requests: list[Any], *, address: str | None = None,
                 actors: int = 2, batch_size: int | None = None,
                 item_concurrency: int | None = None, overrides: dict[str, Any] | None = None,
                 settings: Settings | None = None) -> Iterator[tuple[int, Any]]:
    """The CLI's ``--batch --ray``: requests built by the driver, run on the actor pool;
    yields ``(index, outcome)`` in input order (an outcome has ``to_dict``, or is an
    exception for a bad input line) **as blocks finish**: the dataset is streamed, never
    materialised, so memory stays bounded and an interruption keeps every finished item.

    The call log is written by the driver, once: each block's records are handed to the
    driver's writer before its results are yielded (printed), and the writer is drained when
    the iteration ends — also when it is stopped (Ctrl-C, SIGTERM) — so every printed result
    is in the call log."""
    ray = ensure_ray(address)
    overrides = overrides or {}
    settings = _settings(settings, overrides)
    rows = [{"_fscale_index": i, _REQUEST: pickle.dumps(r)}
            for i, r in enumerate(requests) if not isinstance(r, Exception)]
    bad = {i: r for i, r in enumerate(requests) if isinstance(r, Exception)}
    # Small blocks: results (and the call log) advance every BLOCK_ITEMS items, not once the
    # whole dataset is done.
    size = batch_size or max(1, min(BLOCK_ITEMS, -(-len(rows) // max(1, actors * 4))))
    blocks = max(1, -(-len(rows) // size))
    # One task per block: a batch_size larger than the blocks would make Ray bundle several
    # blocks into one task, and the first result would wait for all of them.
    size = max(1, -(-len(rows) // blocks))
    from ..engine.session import Engine

    engine = Engine(settings)
    try:
        if rows:
            ds = ray.data.from_items(rows, override_num_blocks=blocks)
            out = _map(ds, kind, spec={}, actors=actors, batch_size=size,
                       item_concurrency=item_concurrency, overrides=overrides,
                       settings=settings)
            done: Iterator[Any] = out.iter_batches(batch_format="numpy", batch_size=None,
                                                   prefetch_batches=0)
        else:
            done = iter(())
        pending = dict(bad)
        next_index = 0
        for batch in done:
            engine.record_calls(record for blob in batch[_CALLS]
                                for record in pickle.loads(blob))
            for index, blob in zip(batch["_fscale_index"], batch[_RESULT]):
                d = json.loads(blob)
                pending[int(index)] = RuntimeError(d["error"]) if d.get("status") == "error" \
                    and d.get("id") is None else _Result(d)
            while next_index in pending:
                yield next_index, pending.pop(next_index)
                next_index += 1
        while next_index in pending:
            yield next_index, pending.pop(next_index)
            next_index += 1
    finally:
        engine.close()  # drains the writer: every result yielded so far is logged
