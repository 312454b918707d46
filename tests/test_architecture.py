"""The layers are enforced, not just described (ARCHITECTURE.md): the import contracts in
pyproject.toml hold, and the modules that used to import each other no longer do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") >= 4


def test_modules_that_imported_each_other_no_longer_do():
    import grimp

    graph = grimp.build_graph("fscale_tui", exclude_type_checking_imports=True)
    for a, b in [("fscale_tui.engine.catalog.config", "fscale_tui.engine.providers.local.provider"),
                 ("fscale_tui.engine.catalog.config", "fscale_tui.engine.providers"),
                 ("fscale_tui.app", "fscale_tui.screens.help")]:
        there = graph.find_shortest_chain(importer=a, imported=b)
        back = graph.find_shortest_chain(importer=b, imported=a)
        assert there is None or back is None, f"{a} and {b} import each other: {there} / {back}"


def test_adding_a_strategy_or_a_provider_is_one_module():
    """The registries find their members by scanning their folder."""
    from fscale_tui.engine import providers, strategies

    assert set(strategies.names()) >= {"judge", "vote", "weighted", "usc", "tournament",
                                       "beam", "dvts"}
    assert set(providers.provider_types()) == {"openai", "local", "replay"}
