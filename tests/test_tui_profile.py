"""The TUI's Profile screen (F8): the frontier the engine computed from the stored plans, as
a terminal plot and a table. SVG snapshots (``--snapshot-update`` to refresh), fed by a fixed
``routing/plans.json`` stamped for the (empty) profile, so the picture is fixed data."""

from __future__ import annotations

import pytest

from fscale_tui.app import FscaleApp
from fscale_tui.engine.base import storage
from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.routing.planner import Plan, PlanSet, plans_path, profile_fingerprint

SIZE = (120, 34)


def fixed_plans() -> PlanSet:
    """A frontier like the MMLU-Pro replay's: one dear accurate model, two cheaper ones."""
    def plan(models, tau, acc, cost, calls):
        return Plan(models, tau, acc, cost, calls, [{m: 0.0 for m in models}] * len(models))

    plans = [plan(["phi"], 1.0, 0.42, 0.10, 1.0), plan(["flash"], 1.0, 0.64, 0.19, 1.0),
             plan(["flash", "llama", "pro"], 0.7, 0.716, 2.17, 2.27),
             plan(["flash", "llama", "pro"], 0.8, 0.724, 2.28, 2.39),
             plan(["flash", "llama", "pro", "qwen"], 0.95, 0.725, 3.97, 3.87)]
    singles = [("pro", 0.709, 3.1), ("flash", 0.637, 0.19), ("llama", 0.631, 0.9),
               ("qwen", 0.47, 0.9), ("phi", 0.416, 0.1)]
    return PlanSet(
        unit="usd", spread=10.0, family_rho=0.0, items=1783,
        best_single={"model": "pro", "accuracy": 0.709, "cost": 3.1}, plans=plans, default=3,
        router=[{"lambda": 5.0, "cost": 0.1, "accuracy": 0.42},
                {"lambda": 0.2, "cost": 0.19, "accuracy": 0.64},
                {"lambda": 0.03, "cost": 1.4, "accuracy": 0.68},
                {"lambda": 0.0, "cost": 3.1, "accuracy": 0.709}],
        frontier={"singles": [{"model": m, "accuracy": a, "cost": c} for m, a, c in singles],
                  "majorities": [{"k": 2, "models": ["pro", "flash"], "accuracy": 0.71, "cost": 3.29},
                                 {"k": 3, "models": ["pro", "flash", "llama"], "accuracy": 0.724,
                                  "cost": 4.19}]},
        prices={m: c for m, _a, c in singles})


@pytest.fixture
def profile_home(fscale_home):
    settings = load_settings()
    plans = fixed_plans()
    plans.fingerprint = profile_fingerprint(settings)
    plans_path(settings).parent.mkdir(parents=True, exist_ok=True)
    storage.write_json(plans_path(settings), plans.to_dict())
    return fscale_home


def test_profile_screen_draws_the_frontier(profile_home, snap_compare):
    assert snap_compare(FscaleApp(start="profile"), terminal_size=SIZE)


def test_profile_screen_lists_the_default_plan_first_among_equals(profile_home):
    import asyncio

    async def run() -> list[str]:
        app = FscaleApp(start="profile")
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(100):
                await pilot.pause()
                if app.screen.query_one("#profile-table").row_count:
                    break
            table = app.screen.query_one("#profile-table")
            return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]

    rows = asyncio.run(run())
    assert any("-k auto: flash+llama+pro τ=0.8" in r for r in rows)
    assert any(r.startswith("single model: pro") for r in rows)  # the best single model
    assert not any(r.startswith("single model: phi") for r in rows)  # other singles: the plot


def test_profile_screen_says_how_to_profile_when_nothing_is(fscale_home):
    import asyncio

    async def run() -> str:
        app = FscaleApp(start="profile")
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(100):
                await pilot.pause()
                text = str(app.screen.query_one("#profile-note").render())
                if text.strip():
                    return text
        return ""

    assert "fscale profile" in asyncio.run(run())
