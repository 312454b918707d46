"""Generation strategies behind ``engine.generate``, in one registry.

A strategy is ``async def strategy(run: Run) -> GenerateResult`` in any module of this package,
registered with :func:`register`::

    @register("vote", "self-consistency over final answers", judges=0)
    async def vote(run: Run) -> GenerateResult: ...

The CLI's ``--strategy`` choices and help, the TUI's selector and the batch reader all read
:func:`strategies`; the modules of this package are imported on first use, so adding a
strategy is one new module (plus its tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..base.plugins import load_package


@dataclass(frozen=True)
class Strategy:
    name: str
    summary: str
    run: Callable[[Any], Awaitable[Any]]
    #: candidates when -k is not given (None: the ``k`` setting)
    default_k: int | None = None
    #: judges to pick: "k" (--judges, else one per candidate), "one" (exactly one selector),
    #: a number (at least that many, or --judges), or 0 (no judge)
    judges: int | str = 2
    #: builds its own candidates step by step (cannot judge given candidates)
    search: bool = False
    order: int = 100

    def judge_count(self, requested: int | None, k: int) -> int:
        if self.judges == 0:
            return 0
        if self.judges == "k":
            return requested or k
        if self.judges == "one":
            return 1
        return max(int(self.judges), requested or int(self.judges))


_REGISTRY: dict[str, Strategy] = {}
_LOADED = False
#: modules of this package that hold no strategy
_SUPPORT = {"common", "generate"}


def register(name: str, summary: str, *, default_k: int | None = None, judges: int | str = 2,
             search: bool = False, order: int = 100) -> Callable[[Any], Any]:
    """Register a strategy function under ``name`` (see the module docstring)."""
    def wrap(fn: Any) -> Any:
        _REGISTRY[name] = Strategy(name, summary, fn, default_k, judges, search, order)
        return fn

    return wrap


def strategies() -> dict[str, Strategy]:
    """Every registered strategy, in display order (importing the package's modules once)."""
    global _LOADED
    if not _LOADED:
        load_package(__name__, __path__, skip=_SUPPORT)
        _LOADED = True
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def names() -> tuple[str, ...]:
    return tuple(strategies())
