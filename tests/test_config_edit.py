"""Edits of the user's config.toml keep the user's file: comments, order and formatting survive
``panels set``/``rm`` and ``evolve --apply``, and a config.toml that is a symbolic link (a
dotfiles repository) stays a link whose target gets the edit."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.learning.store import CallRecord, LearningStore, ReplyRecord
from tests.conftest import STUB_MODELS, run_cli

USER_FILE = """\
# My fscale setup — keep these notes!
[providers.stub]
base_url = "{base}"   # the loopback server
rpm = 600

# Models I trust
[models.fast-a]
provider = "stub"
id = "vendor-a/fast"
tier = "fast"
family = "a"

{others}
[panels]
# the default panel, chosen by hand
default = ['fast-a', 'fast-b', 'slow-c']   # single quotes on purpose
"""


def _user_config(home: Path, server, *, link: bool) -> Path:
    others = "".join(
        f'[models.{alias}]\nprovider = "stub"\nid = "{mid}"\ntier = "{tier}"\nfamily = "{fam}"\n\n'
        for alias, (mid, tier, fam) in STUB_MODELS.items() if alias != "fast-a")
    text = USER_FILE.format(base=server.base_url, others=others)
    if not link:
        (home / "config.toml").write_text(text)
        return home / "config.toml"
    dotfiles = home.parent / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "fscale.toml"
    target.write_text(text)
    (home / "config.toml").symlink_to(target)
    return target


def _kept(before: str, after: str) -> None:
    """Every line of ``before`` except the panels it changed is still in ``after``, in order."""
    lines = [x for x in before.splitlines() if not x.startswith(("default =", "mine ="))]
    at = 0
    rest = after.splitlines()
    for line in lines:
        assert line in rest[at:], (line, after)
        at = rest.index(line, at) + 1


def test_panels_set_and_rm_keep_comments_order_and_the_link(server, fscale_home):
    target = _user_config(fscale_home, server, link=True)
    before = target.read_text()
    proc = run_cli("panels", "set", "mine", "fast-a,fast-c")
    assert proc.returncode == 0, proc.stderr
    link = fscale_home / "config.toml"
    assert link.is_symlink() and os.readlink(link) == str(target)
    after = target.read_text()
    _kept(before, after)
    assert tomllib.loads(after)["panels"]["mine"] == ["fast-a", "fast-c"]
    assert load_settings().panels["mine"] == ["fast-a", "fast-c"]
    proc = run_cli("panels", "rm", "mine")
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and target.read_text() == before


def test_evolve_apply_keeps_the_users_file(server, fscale_home):
    path = _user_config(fscale_home, server, link=False)
    before = path.read_text()
    with LearningStore.for_settings(load_settings()) as store:
        for i in range(20):  # slow-c always dissents; fast-c and fast-d agree with the rest
            store.record_call(CallRecord(id=f"seed{i}", labels=["YES", "NO"], replies=[
                ReplyRecord("fast-a", answer="YES"), ReplyRecord("fast-b", answer="YES"),
                ReplyRecord("slow-c", answer="NO"),
                ReplyRecord("fast-c" if i % 2 else "fast-d", role="challenger", answer="YES")]))
    proc = run_cli("evolve", "--apply", "--min-calls", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["applied"]
    after = path.read_text()
    _kept(before, after)
    assert "# the default panel, chosen by hand" in after
    assert "slow-c" not in tomllib.loads(after)["panels"]["default"]
