"""Acceptance: the TUI (Pilot, in this process) and 4 CLI writers on one home at once: no call
lost, no "disk I/O error", no deleted SQLite file held by the TUI — the short version of
``bench/home_load.py`` (which runs it for 5 minutes and prints the figures)."""

from __future__ import annotations

import pytest

from tests import home_load
from tests.conftest import Behaviour, run_cli, write_config
from tests.home_load import run

# A 10-second run whose counts are asserted: not beside another heavy test (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("serial")


async def test_the_tui_and_four_cli_writers_share_one_home(server, fscale_home, monkeypatch):
    monkeypatch.setattr(home_load, "RUN_CLI", run_cli)
    write_config(fscale_home, server)
    server.set_default(Behaviour(reply="YES"))
    tally = await run(fscale_home, seconds=10, writers=4)
    assert tally.problems == []
    assert len(tally.tui_questions) >= 2 and tally.cli_runs >= 4
    assert tally.tui_lost == 0 and tally.cli_lost == 0 and tally.deleted_held_max == 0
    assert len(tally.printed_ids) >= 4 * 12
