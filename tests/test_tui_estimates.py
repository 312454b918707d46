"""What the engine decides by is what the TUI shows (issue 22): the label-free accuracy estimate
with its uncertainty beside Elo on the Ratings and Panels screens, every shadow challenger and
what they cost on the Ask screen, and ``--alpha`` on the Ask screen. Pilot, against the
loopback server (or a replay provider for ``-k auto``) and a real call log."""

from __future__ import annotations

import json

from fscale_tui.app import FscaleApp
from tests.conftest import Behaviour, earn_shadow_budget, mid, run_cli, write_config
from tests.test_tui import SIZE, ask, banner_text, wait_for
from tests.test_tui_snapshots import seed_call_log


def cli_estimates() -> dict[str, dict]:
    """Each model's row of ``fscale ratings --json``, with ``shown`` and ``elo``: its
    "accuracy ± sd" and Elo rating exactly as the ``fscale ratings`` table prints them."""
    import re

    proc = run_cli("ratings", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {row["model"]: row for row in json.loads(proc.stdout)}
    table = run_cli("ratings", env={"NO_COLOR": "1", "COLUMNS": "200"}).stdout
    for model, row in rows.items():
        found = re.search(rf"^{re.escape(model)}\s+(\S+ ±\S+)\s+(\d+)\s", table, re.M)
        row["shown"], row["elo"] = found.group(1), found.group(2)
    return rows


def accuracy_text(row: dict) -> str:
    return row["shown"]


async def test_ratings_show_the_estimate_with_its_sd_beside_elo_sorted_by_it(server, fscale_home):
    write_config(fscale_home, server)
    from fscale_tui.engine.catalog.config import load_settings

    seed_call_log(load_settings())
    rows = cli_estimates()
    app = FscaleApp(start="ratings")
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#ratings-table")
        await wait_for(pilot, lambda: table.row_count == len(rows), what="the ratings")
        labels = [str(c.label) for c in table.columns.values()]
        assert labels.index("accuracy ± sd") < labels.index("Elo")
        for model, row in rows.items():
            assert str(table.get_cell(model, "accuracy")) == accuracy_text(row)
            assert float(str(table.get_cell(model, "rating"))) == round(row["rating"], 1)
        # Decisions follow the estimate: it is the default order, as in `fscale ratings`.
        order = [k.value for k in table.rows]
        assert order == sorted(rows, key=lambda m: (-rows[m]["estimate"]["accuracy"],
                                                     -rows[m]["rating"], m))
        note = str(app.screen.query_one("#ratings-note").render())
        assert "accuracy" in note and "Elo" in note


async def test_panels_show_each_members_estimate_and_elo_and_evolve_ranks_by_it(server, fscale_home):
    write_config(fscale_home, server)
    from fscale_tui.engine.catalog.config import load_settings

    seed_call_log(load_settings())
    rows = cli_estimates()
    app = FscaleApp(start="panels")
    async with app.run_test(size=(120, 36)) as pilot:
        members = app.screen.query_one("#panel-members")
        await wait_for(pilot, lambda: accuracy_text(rows["fast-a"])
                       in str(members.render()), what="the members' estimates")
        text = str(members.render())
        for model in ("fast-a", "fast-b", "slow-c"):
            line = next(x for x in text.splitlines() if x.strip().startswith(model))
            assert accuracy_text(rows[model]) in line
            assert f"Elo {rows[model]['elo']}" in line
        await pilot.press("v")
        diff = app.screen.query_one("#evolve-diff")
        await wait_for(pilot, lambda: "proposed" in str(diff.render()), what="the proposal")
        shown = str(diff.render())
        assert accuracy_text(rows["fast-a"]) in shown and "Elo" in shown


async def test_every_shadow_challenger_and_their_cost_are_on_the_ask_screen(server, stub_config,
                                                                          monkeypatch):
    from fscale_tui.widgets.votes import VoteTable

    monkeypatch.setenv("FSCALE_CHALLENGER", "1")
    monkeypatch.setenv("FSCALE_CHALLENGERS", "3")
    earn_shadow_budget()  # a fresh home has earned no shadow yet
    server.set_default(Behaviour(reply="Answer: NO"))
    for alias in ("fast-a", "fast-b", "slow-c"):
        server.script(mid(alias), Behaviour(reply="Answer: YES"))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        table = app.screen.query_one(VoteTable)
        screen = app.screen

        def shadows() -> dict[str, str]:
            return {m: v.status for m, v in table.members.items() if m.endswith("(challenger)")}

        await wait_for(pilot, lambda: "shadow" in banner_text(app) and shadows()
                       and "pending" not in shadows().values(), what="the challengers' votes")
        result = screen.last_result
        assert len(result.challengers) >= 2  # a fresh log: every outsider is uncertain
        assert set(shadows()) == {f"{v.model} (challenger)" for v in result.challengers}
        banner = banner_text(app)
        assert result.challenger_calls >= 2
        assert f"+ {result.challenger_calls} shadows" in banner  # what they cost, beside the calls
        assert "→ YES" in banner  # the challengers' NO never counts


async def test_ask_screen_takes_alpha_for_k_auto(fscale_home):
    from tests.test_auto import _profiled, _scores_file

    tasks, _ = _profiled(fscale_home)
    _scores_file(fscale_home)
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        alpha = screen.query_one("#alpha")
        assert alpha.disabled  # α applies to k = auto only
        screen.query_one("#k").value = "auto"
        await pilot.pause()
        assert not alpha.disabled
        await ask(pilot, question=tasks[0].question, answers="YES,NO")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the answer")
        assert f"→ {tasks[0].label}" in banner_text(app)
        alpha.value = "0.1"
        await ask(pilot, question=tasks[0].question, answers="YES,NO")
        await wait_for(pilot, lambda: "abstained" in banner_text(app), what="the abstention")
        alpha.value = "1.5"
        await ask(pilot, question=tasks[0].question, answers="YES,NO")
        await wait_for(pilot, lambda: any("--alpha must be between 0 and 1" in n.message
                                          for n in app._notifications), what="the refusal")
