"""The async engine: providers, client, registry, parsing, voting, health, state.

It imports neither typer nor textual; the CLI and the TUI are views over it.
"""
