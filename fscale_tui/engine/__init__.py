"""The async engine: providers, client, registry, parsing, voting, health, state.

It imports neither typer nor textual; the CLI and the TUI are views over it.
"""

# The output boundary: installs the redacting filter on the ``fscale`` logger before any engine
# module can log (engine/output.py).
from .base import output as _output  # noqa: E402,F401
