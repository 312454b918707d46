"""The replay provider: recorded replies per model and prompt, offline; missing entries fail loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.errors import ProviderError
from fscale_tui.engine.providers import usable
from fscale_tui.engine.providers.replay import prompt_sha256, replay_lines_from_calls, write_replay_file
from fscale_tui.engine.routing.profile import ask_model
from fscale_tui.engine.session import Engine
from fscale_tui.engine.base.prompts import build_messages
from fscale_tui.engine.base.calls import ScaleRequest

LABELS = ("YES", "NO")


def write_replay_config(home: Path, lines: list[dict], models: dict[str, str]) -> Path:
    path = home / "replay.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    doc = {"providers": {"rec": {"type": "replay", "path": "replay.jsonl"}},
           "models": {alias: {"provider": "rec", "id": mid, "tier": "fast", "family": alias, "cost": 0.1}
                      for alias, mid in models.items()},
           "panels": {"default": list(models)}}
    (home / "config.toml").write_text(tomli_w.dumps(doc))
    return path


@pytest.fixture
def replay_home(fscale_home):
    sha = prompt_sha256(build_messages("Is 7 prime?", LABELS, None))
    lines = [
        {"model": "v/a", "id": "q1", "reply": "Answer: YES"},
        {"model": "v/b", "id": "q1", "reply": "I think NO.\nAnswer: NO"},
        {"model": "v/a", "id": "q2", "reply": ""},
        {"model": "v/a", "prompt_sha256": sha, "reply": "Answer: YES"},
        {"model": "v/b", "prompt_sha256": sha, "reply": "Answer: YES"},
        {"model": "v/c", "prompt_sha256": sha, "reply": "Answer: NO"},
    ]
    write_replay_config(fscale_home, lines, {"ra": "v/a", "rb": "v/b", "rc": "v/c"})
    return fscale_home


def test_replay_provider_needs_no_base_url_and_path_lands_in_options(replay_home):
    settings = load_settings()
    prov = settings.providers["rec"]
    assert prov.type == "replay" and prov.options["path"] == "replay.jsonl" and usable(prov)


async def test_exact_reply_per_model_and_task_id(replay_home):
    async with Engine() as engine:
        msgs = build_messages("anything", LABELS, None)
        a = await ask_model(engine.context, engine.registry.model("ra"), msgs, LABELS, task_id="q1")
        b = await ask_model(engine.context, engine.registry.model("rb"), msgs, LABELS, task_id="q1")
        empty = await ask_model(engine.context, engine.registry.model("ra"), msgs, LABELS, task_id="q2")
        raw = await engine.client.chat(engine.registry.model("rb"), msgs,
                                       extra={"metadata": {"fscale_task_id": "q1"}})
    assert (a.answer, b.answer, a.error, b.error) == ("YES", "NO", None, None)
    assert empty.answer is None and empty.error is None  # a recorded reply with no answer
    assert raw.content == "I think NO.\nAnswer: NO"


async def test_plain_scale_replays_by_prompt_hash(replay_home):
    async with Engine() as engine:
        r = await engine.scale(ScaleRequest("Is 7 prime?", LABELS, models=("ra", "rb", "rc")))
    assert r.answer == "YES" and r.counts["YES"] == 2  # "rc" (NO) may be cancelled: decided early


async def test_missing_entry_is_a_clear_error_naming_model_and_id(replay_home):
    async with Engine() as engine:
        with pytest.raises(ProviderError) as err:
            await engine.client.chat(engine.registry.model("rc"), build_messages("x", LABELS, None),
                                     extra={"metadata": {"fscale_task_id": "q1"}}, retries=0)
    assert err.value.status == 422 and err.value.kind == "bad_request"
    assert "'v/c'" in str(err.value) and "'q1'" in str(err.value)


async def test_missing_prompt_names_the_prompt_hash(replay_home):
    msgs = build_messages("never recorded", LABELS, None)
    async with Engine() as engine:
        out = await ask_model(engine.context, engine.registry.model("ra"), msgs, LABELS)
    assert out.error is not None and prompt_sha256(msgs)[:12] in out.error and "'v/a'" in out.error


def test_missing_replay_file_is_a_clear_config_error(fscale_home):
    doc = {"providers": {"rec": {"type": "replay", "path": "nope.jsonl"}},
           "models": {"ra": {"provider": "rec", "id": "v/a"}}}
    (fscale_home / "config.toml").write_text(tomli_w.dumps(doc))
    from fscale_tui.engine.base.errors import ConfigError
    from fscale_tui.engine.providers.replay import make_adapter

    settings = load_settings()
    with pytest.raises(ConfigError, match="nope.jsonl"):
        make_adapter(settings.providers["rec"], settings)


async def test_call_log_records_export_to_replay_lines_that_replay_the_call(fscale_home):
    calls = [{"id": "c1", "question": "Is it raining?", "context": "sky: grey", "labels": '["YES", "NO"]',
              "replies": [{"model": "ra", "raw": "Answer: YES", "status": "answered"},
                          {"model": "rb", "raw": None, "status": "failed"},
                          {"model": "rc", "raw": "NO", "status": "answered"}]}]
    lines = list(replay_lines_from_calls(calls, {"ra": "v/a", "rc": "v/c"}))
    assert [x["model"] for x in lines] == ["v/a", "v/c"] and all(x["id"] == "c1" for x in lines)
    path = fscale_home / "exported.jsonl"
    assert write_replay_file(path, lines) == 2
    write_replay_config(fscale_home, [json.loads(x) for x in path.read_text().splitlines()],
                        {"ra": "v/a", "rc": "v/c"})
    async with Engine() as engine:
        r = await engine.scale(ScaleRequest("Is it raining?", LABELS, context="sky: grey",
                                            models=("ra", "rc"), tie_break="order"))
    assert r.counts == {"YES": 1, "NO": 1}
