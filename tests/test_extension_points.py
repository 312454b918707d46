"""Adding a voting rule, a provider type, a screen or a command is one module (issue 23, item
4): each test drops one new module into a copy of the package — nothing else in the copy is
edited — and shows, in a fresh interpreter that imports the copy, that the registry finds it and
that it works through the ordinary entry points (the CLI, the vote, the app)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomli_w

from tests.conftest import STUB_MODELS, Behaviour

PACKAGE = Path(__file__).resolve().parent.parent / "fscale_tui"


@pytest.fixture
def copy(tmp_path: Path):
    """A copy of fscale_tui under tmp_path; ``add(relative_path, source)`` drops a module in
    it; ``run(*argv)`` runs a Python process whose ``fscale_tui`` is the copy."""
    root = tmp_path / "copy"
    shutil.copytree(PACKAGE, root / "fscale_tui", ignore=shutil.ignore_patterns("__pycache__"))

    def add(relative: str, source: str) -> None:
        (root / "fscale_tui" / relative).write_text(textwrap.dedent(source))

    def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(root))
        proc = subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return proc

    def python(code: str) -> subprocess.CompletedProcess:
        check = ("import fscale_tui, pathlib; "
                 f"assert pathlib.Path(fscale_tui.__file__).is_relative_to({str(root)!r})\n")
        return run("-c", check + textwrap.dedent(code))

    return add, run, python


UNANIMOUS = '''
    """``unanimous``: a decision only when every valid ballot names the same label."""

    from . import Tally, VotingRule, register


    @register("unanimous")
    class Unanimous(VotingRule):
        """Everyone agrees, or no decision."""

        order = 90

        def decide(self, ballots, labels):
            tally = super().decide(ballots, labels)
            if len(tally.counts) > 1:
                return Tally(None, tally.leader, tally.counts, tally.weights, tally.valid,
                             tally.valid_weight, tally.total_weight)
            return tally
'''


def test_a_voting_rule_is_one_module(copy):
    add, _, python = copy
    add("engine/decide/rules/unanimous.py", UNANIMOUS)
    proc = python('''
        from fscale_tui.engine.decide.rules import rule_for, rules, signals
        assert "unanimous" in rules() and "unanimous" in signals(), (rules(), signals())
        rule = rule_for("unanimous")
        agree = [rule.ballot("a", "YES"), rule.ballot("b", "YES")]
        split = [rule.ballot("a", "YES"), rule.ballot("b", "YES"), rule.ballot("c", "NO")]
        print(type(rule).__name__, rule.decide(agree, ["YES", "NO"]).answer,
              rule.decide(split, ["YES", "NO"]).answer,
              rule_for("majority").decide(split, ["YES", "NO"]).answer)
    ''')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Unanimous", "YES", "None", "YES"]


ECHO = '''
    """A provider type for the test: an OpenAI-compatible endpoint whose models are usable only
    when the provider sets ``enabled = true`` (an option of its own)."""

    TYPE = "echo"
    PROVIDER_OPTIONS = ("enabled",)
    MODEL_OPTIONS = ()
    NEEDS_BASE_URL = True


    def usable(provider, env=None):
        return provider.options.get("enabled") is True


    def why_not(provider, env=None):
        return "enabled is not true"


    def make_adapter(provider, settings):
        return None
'''


def test_a_provider_type_is_one_module(copy, server, fscale_home):
    add, run, _ = copy
    add("engine/providers/echo.py", ECHO)
    server.set_default(Behaviour(reply="Answer: YES"))
    doc = {"providers": {"mine": {"type": "echo", "base_url": server.base_url, "enabled": True},
                         "off": {"type": "echo", "base_url": server.base_url}},
           "models": {f"e{i}": {"provider": "mine", "id": mid, "tier": tier, "family": fam}
                      for i, (mid, tier, fam) in enumerate(list(STUB_MODELS.values())[:3])},
           "panels": {"default": ["e0", "e1", "e2"]}}
    doc["models"]["x"] = {"provider": "off", "id": "vendor-x/m", "tier": "fast", "family": "x"}
    (fscale_home / "config.toml").write_text(tomli_w.dumps(doc))
    proc = run("-m", "fscale_tui", "scale", "Is it?", "-a", "YES,NO", "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["answer"] == "YES" and sorted(result["members"]) == ["e0", "e1", "e2"]
    proc = run("-m", "fscale_tui", "models", "--json")
    assert proc.returncode == 0, proc.stderr
    usable = {row["alias"]: row["usable"] for row in json.loads(proc.stdout)
              if row["alias"] in ("e0", "x")}
    assert usable == {"e0": True, "x": False}


def test_what_a_provider_type_needs_is_its_own_hook(copy, fscale_home):
    """"needs base_url" is the provider type's NEEDS_BASE_URL, not a check for "openai": a new
    type that sets it gets the same one-line error, and the local type (which does not) none."""
    add, run, _ = copy
    add("engine/providers/echo.py", ECHO)
    for kind, needs in (("echo", True), ("openai", True), ("local", False)):
        (fscale_home / "config.toml").write_text(tomli_w.dumps(
            {"providers": {"nourl": {"type": kind}}}))
        proc = run("-m", "fscale_tui", "models", "--json")
        said = "[providers.nourl] needs base_url" in proc.stderr
        assert (proc.returncode, said) == ((2, True) if needs else (0, False)), (kind, proc.stderr)


NOTES = '''
    """A screen for the test: one line of text."""

    from textual.widgets import Static

    from .base import FscaleScreen

    SCREEN = {"mode": "notes", "class": "NotesScreen", "key": "f9", "label": "Notes",
              "title": "Notes: a screen added by one module"}


    class NotesScreen(FscaleScreen):
        NAME = "notes"

        def body(self):
            yield Static("notes live here", id="notes")
'''


def test_a_screen_is_one_module(copy, fscale_home):
    add, _, python = copy
    add("screens/notes.py", NOTES)
    proc = python('''
        import asyncio
        from fscale_tui.app import FscaleApp
        from fscale_tui.cli.tui import SCREEN_NAMES

        async def main():
            app = FscaleApp()
            async with app.run_test(size=(100, 30)) as pilot:
                await pilot.pause()
                await pilot.press("f9")
                for _ in range(50):
                    await pilot.pause(0.05)
                    if type(app.screen).__name__ == "NotesScreen":
                        break
                print(type(app.screen).__name__, app.screen.query_one("#notes").render())
                print("notes" in SCREEN_NAMES)

        asyncio.run(main())
    ''')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["NotesScreen notes live here", "True"]


HELLO = '''
    """``fscale hello``: a command for the test."""

    import typer

    from .common import guarded, print_json

    HELP_ORDER = 90


    @guarded
    def hello(name: str = typer.Argument("world")) -> None:
        """Say hello: one JSON object on stdout.

        Example:

          fscale hello you
        """
        print_json({"hello": name})


    def register(app: typer.Typer) -> None:
        app.command("hello")(hello)
'''


def test_a_command_is_one_module(copy, fscale_home):
    add, run, _ = copy
    add("cli/hello.py", HELLO)
    proc = run("-m", "fscale_tui", "hello", "you")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"hello": "you"}
    listing = run("-m", "fscale_tui", "--help")
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if " hello " in line)
    assert "Say hello: one JSON object on stdout." in line
    # last in --help (HELP_ORDER 90), after mcp (80)
    names = [line.split()[1] for line in listing.stdout.splitlines()
             if line.startswith("│ ") and len(line.split()) > 2]
    assert names.index("hello") > names.index("mcp")
