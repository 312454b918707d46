"""fscale: test-time scaling with model ensembles.

>>> from fscale_tui import scale
>>> result = scale("Is this code safe?", ["SAFE", "VULNERABLE"], context=source)  # doctest: +SKIP
>>> result.answer, result.confidence                                              # doctest: +SKIP

The functions here are synchronous wrappers over the async engine (``fscale_tui.engine``).
They are imported lazily so that ``import fscale_tui`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["scale", "scale_batch", "generate", "generate_batch", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("scale", "scale_batch", "generate", "generate_batch"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'fscale_tui' has no attribute {name!r}")
