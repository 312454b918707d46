"""No key byte in any output: servers echo the key in 200 replies and in error replies, and every
command, the TUI included, shows none of it — not the key, not a piece of it (the 24-character
prefix a cut preview used to show), not a Redis password in any URL form."""

from __future__ import annotations

import json

import pytest

from fscale_tui.engine.base.redact import MASK, redact, register_secrets, url_secrets
from tests.conftest import Behaviour, mid, run_cli, write_config

KEY = "Hq3Vn8Lc5Tz1Wr6Yb0Ks4Pm9Dx7Gf2Ja"  # shaped like no well-known key: only registration knows it
ENV = {"ECHO_KEY": KEY, "FSCALE_RETRIES": "0"}
#: A reply whose first 60 characters end with the first 24 of the key (what a preview showed).
PREFIX = "Output 1 is right, and the key is ".ljust(35, ".")


def pieces(secret: str) -> list[str]:
    """What must never be seen: the secret, every 12-character piece, its first and last 8."""
    return [secret, secret[:8], secret[-8:]] + [secret[i:i + 12] for i in range(len(secret) - 11)]


def leaks(text: str, secret: str = KEY) -> list[str]:
    return [p for p in pieces(secret) if p in text]


def echo(body: dict) -> str:
    return PREFIX + KEY + " — final answer: YES. Output 1."


@pytest.fixture
def echoing(server, fscale_home):
    """Every model echoes the key in a 200 reply; fast-b and fast-c echo it in errors."""
    write_config(fscale_home, server, api_key_env="ECHO_KEY")
    server.set_default(Behaviour(reply_fn=echo))
    server.script(mid("fast-b"), Behaviour(status=401, echo_auth=True))
    server.script(mid("fast-c"), Behaviour(status=500, error_body='{"error": "bad key {api_key}"}'))
    return server


def test_the_redactor_masks_pieces_of_a_key_and_url_passwords_in_every_form():
    register_secrets([KEY])
    assert redact(f"preview {KEY[:24]}…") == f"preview {MASK}…"
    assert redact(f"…{KEY[-9:]} tail") == f"…{MASK} tail"
    assert redact(f"mid {KEY[5:17]} x") == f"mid {MASK} x"
    assert redact("an ordinary sentence about keys") == "an ordinary sentence about keys"
    for url in ("redis://:pw1@h:6379/0", "redis://user:pw1@h/0", "rediss://h:6380/0?password=pw1",
                "redis://h/0?db=1&password=pw1", "REDIS://:pw1@[::1]:6379"):
        assert "pw1" not in redact(f"backend {url} is down"), url
        assert "pw1" in url_secrets(url), url


def test_generate_prints_no_key_byte_on_stdout_or_stderr(echoing):
    """Finding 4: the selected reply on stdout, candidate previews and judge lines on stderr."""
    proc = run_cli("generate", "Which output?", "-k", "2", "--models", "fast-a,fast-d",
                   "--judge-models", "slow-c,fast-a2", env=ENV)
    # The servers really answered with the key, and the selection was printed (not void).
    assert proc.returncode == 0, proc.stderr
    assert "Output 1 is right" in proc.stdout and MASK in proc.stdout
    assert "✎" in proc.stderr and "⚖" in proc.stderr
    assert not leaks(proc.stdout) and not leaks(proc.stderr), (proc.stdout, proc.stderr)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_no_command_prints_a_key_byte(echoing, tmp_path, json_flag):
    """Acceptance 3: scale, verify, generate, health, history, config show."""
    models = ["--models", "fast-a,fast-b,fast-c"]
    source = tmp_path / "source.txt"
    source.write_text("The sky is blue.")
    scale = run_cli("scale", "Is it?", "-a", "YES,NO", *models, "--json", env=ENV)
    call_id = json.loads(scale.stdout)["id"]
    runs = [
        scale,
        run_cli("scale", "Is it?", "-a", "YES,NO", *models, *json_flag, env=ENV),
        run_cli("verify", "--source", str(source), *models, *json_flag, input="The sky is green.",
                env=ENV),
        run_cli("generate", "Which?", "-k", "3", *models, *json_flag, env=ENV),
        run_cli("health", *models, *json_flag, env=ENV),
        run_cli("history", *json_flag, env=ENV),
        run_cli("history", "show", call_id, *json_flag, env=ENV),
        run_cli("config", "show", *json_flag, env=ENV),
        run_cli("models", *json_flag, env=ENV),
    ]
    # Each server really put the key in what it sent back (else the test proves nothing).
    auth = [r.headers.get("authorization") for r in echoing.requests]
    assert auth and all(a == f"Bearer {KEY}" for a in auth)
    assert MASK in scale.stdout  # the 200 echo and the error echoes were there, masked
    for proc in runs:
        assert proc.returncode in (0, 3), (proc.args, proc.stderr)
        assert not leaks(proc.stdout + proc.stderr), (proc.args, leaks(proc.stdout + proc.stderr))


def test_config_show_and_health_mask_redis_passwords_in_every_form(server, fscale_home):
    """The redactor knows Redis URLs however the password is written (the display itself is
    the state layer's; here the password must not come out whatever is displayed)."""
    write_config(fscale_home, server)
    long_pw, short_pw = "Rp7Zk2Wq9Xc4Vb6Nm1Lj", "pw9"
    for url in (f"redis://:{long_pw}@127.0.0.1:1/0", f"redis://fscale:{long_pw}@127.0.0.1:1/0",
                f"redis://127.0.0.1:1/0?password={long_pw}",
                f"redis://:{short_pw}@127.0.0.1:1/0?password={short_pw}"):
        for args in (("config", "show"), ("config", "show", "--json")):
            proc = run_cli(*args, env={"FSCALE_REDIS_URL": url})
            out = proc.stdout + proc.stderr
            assert "127.0.0.1:1" in out or "redis" in out.lower(), (url, out)
            assert long_pw not in out and f":{short_pw}@" not in out \
                and f"password={short_pw}" not in out, (url, out)


async def test_the_tui_shows_no_key_byte(echoing, monkeypatch):
    """The member card's raw reply, the vote notes and the generate cards (tui, snapshot)."""
    from fscale_tui.app import FscaleApp
    from fscale_tui.widgets.votes import VoteTable, member_card
    from tests.test_tui import SIZE, ask, wait_for

    monkeypatch.setenv("ECHO_KEY", KEY)
    monkeypatch.setenv("FSCALE_RETRIES", "0")
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, answers="YES,NO")
        table = app.screen.query_one(VoteTable)
        await wait_for(pilot, lambda: any(v.status == "answered" for v in table.members.values())
                       and "call" in str(app.screen.query_one("#banner").render()),
                       what="the decision")
        answered = next(m for m, v in table.members.items() if v.status == "answered")
        assert MASK in table.members[answered].content  # the echoed key, masked on arrival
        table.focus()
        table.move_cursor(row=table.get_row_index(answered))
        await pilot.pause()
        cards = [member_card(v) for v in table.members.values()]
        assert any("raw reply:" in c and MASK in c for c in cards)
        shown = "\n".join(cards + [str(app.screen.query_one("#detail").render()),
                                   app.export_screenshot()])
        assert not leaks(shown), leaks(shown)

        await pilot.press("f3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "GenerateScreen", what="generate")
        screen = app.screen
        screen.query_one("#gen-question").value = "Which output?"
        screen.query_one("#gen-question").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: "call" in str(screen.query_one("#gen-banner").render()),
                       what="the selection")
        shown = "\n".join([str(c.render()) for c in screen.cards.values()]
                          + [app.export_screenshot()])
        assert MASK in shown and not leaks(shown), leaks(shown)
