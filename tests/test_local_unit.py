"""The local provider without a real model: catalogue, weights, grammar, state files, adapter.

The adapter is exercised end to end through the engine against the loopback stub server (the
server start is replaced by a function returning the stub's URL); the real llama.cpp servers are
tested in test_local_servers.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fscale_tui.engine.base import storage
from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.errors import UsageError
from fscale_tui.engine.providers.local import provider as lp
from fscale_tui.engine.providers.local import servers, weights
from fscale_tui.engine.base.paths import Paths
from tests.oai_server import Behaviour, StubOpenAIServer

ID_05 = "qwen2.5-coder-0.5b-instruct-q4_k_m"
ID_15 = "qwen2.5-coder-1.5b-instruct-q4_k_m"


@pytest.fixture(autouse=True)
def _local_visible(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FSCALE_LOCAL", raising=False)
    cached = (lp.runtime_installed, lp.builtin_weights_installed)
    for fn in cached:
        fn.cache_clear()
    yield
    for fn in cached:
        fn.cache_clear()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the [local] extra is installed (runtime and weights)."""
    monkeypatch.setattr(lp, "runtime_installed", lambda: True)
    monkeypatch.setattr(lp, "builtin_weights_installed", lambda: True)


@pytest.fixture
def not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lp, "runtime_installed", lambda: False)


# -- catalogue ---------------------------------------------------------------------------------
def test_builtin_local_provider_models_and_panel_are_in_the_settings():
    s = load_settings()
    assert s.providers["local"].type == "local" and s.providers["local"].builtin
    panel = s.panels["local"]
    assert len(panel) == 3
    members = [s.models[a] for a in panel]
    assert {m.id for m in members} == {ID_05, ID_15}  # two distinct models, one reused
    assert all(m.provider == "local" and m.tier == "fast" and m.family == "qwen" and m.cost == 0
               for m in members)
    # Every member states one sentence before its answer, greedy, no sampling parameters: the
    # 1.5B naming the decisive detail, the 0.5B and the 1.5B a plain "Fact: " (on a review the
    # 1.5B's plain fact is mostly the verdict, so its settings share their errors).
    assert [(m.id, m.options.get("reasoning"), m.options.get("reason_lead")) for m in members] == [
        (ID_15, "sentence", lp.DETAIL_LEAD), (ID_05, "sentence", None), (ID_15, "sentence", None)]
    assert all(m.options.get("variant") and "params" not in m.options for m in members)
    assert panel[0] == "local-qwen-1.5b-d"  # -k 1 gets the strongest member
    # The plain models and the 1.5B with one short line of reasoning stay available outside it.
    assert s.models["local-qwen-1.5b-r"].options["reasoning"] == "brief"
    assert "local-qwen-1.5b-r" not in panel
    # The plain models stay available outside the panel.
    for alias, wid in (("local-qwen-1.5b", ID_15), ("local-qwen-0.5b", ID_05)):
        assert s.models[alias].id == wid and "reasoning" not in s.models[alias].options
        assert alias not in panel


def test_default_panel_is_local_when_no_key_and_installed(installed):
    from fscale_tui.engine.catalog.registry import Registry

    s = load_settings(env={"FSCALE_HOME": os.environ["FSCALE_HOME"]})
    assert Registry(s).default_panel() == s.panels["local"]


def test_key_beats_local_models(installed):
    from fscale_tui.engine.catalog.registry import Registry

    s = load_settings(env={"FSCALE_HOME": os.environ["FSCALE_HOME"], "NVIDIA_API_KEY": "k"})
    assert Registry(s).default_panel() == s.panels["nim"]


def test_without_the_extra_the_error_says_how_to_get_models(not_installed):
    from fscale_tui.engine.base.errors import NoProviderError
    from fscale_tui.engine.catalog.registry import Registry

    from fscale_tui.engine.providers import usable

    s = load_settings()
    assert not usable(s.providers["local"], s.env)
    with pytest.raises(NoProviderError, match=r"fscale\[local\]"):
        Registry(s).default_panel()
    with pytest.raises(NoProviderError, match=r"pip install 'fscale\[local\]'"):
        Registry(s).select(models=["local-qwen-0.5b"])
    with pytest.raises(NoProviderError, match="NVIDIA_API_KEY"):
        lp.make_adapter(s.providers["local"], s)


def test_fscale_local_off_hides_local_models(installed, monkeypatch):
    monkeypatch.setenv("FSCALE_LOCAL", "off")
    assert not lp.is_installed()


def test_user_local_provider_only_needs_the_runtime(monkeypatch):
    from fscale_tui.engine.base.settings import ProviderConfig

    monkeypatch.setattr(lp, "runtime_installed", lambda: True)
    monkeypatch.setattr(lp, "builtin_weights_installed", lambda: False)
    assert not lp.is_installed(ProviderConfig(name="local", base_url="", type="local", builtin=True))
    assert lp.is_installed(ProviderConfig(name="mine", base_url="", type="local"))


def test_importing_the_provider_does_not_import_xllamacpp():
    code = ("import sys; import fscale_tui.engine.providers.local.provider as p; p.is_installed(); "
            "import fscale_tui.engine.catalog.config as c; c.load_settings(); "
            "print('xllamacpp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- grammar -----------------------------------------------------------------------------------
def test_label_grammar_allows_exactly_the_labels_longest_first():
    assert lp.label_grammar(("SAFE", "UNSAFE")) == 'root ::= "Answer: " ("UNSAFE" | "SAFE")'
    g = lp.label_grammar(('say "hi"', "a\\b"))
    assert '"say \\"hi\\""' in g and '"a\\\\b"' in g


def test_extra_body_constrains_only_classification():
    s = load_settings()
    adapter = lp.LocalAdapter(s.providers["local"], s)
    m = s.models["local-qwen-0.5b"]
    assert adapter.extra_body(m, labels=("YES", "NO"), stream=False) == {"grammar": 'root ::= "Answer: " ("YES" | "NO")'}
    assert adapter.extra_body(m, labels=None, stream=True) is None


def test_brief_reasoning_grammar_is_one_short_line_then_the_answer():
    g = lp.label_grammar(("YES", "NO"), "brief")
    assert g == ('root ::= reason "\\n" "Answer: " ("YES" | "NO")\n'
                 f'reason ::= "{lp.REASON_LEAD}" [^\\n\\r NYny] [^\\n\\r]{{0,{lp.REASON_CHARS - 2}}} "."')
    # Labels' first letters are excluded after the lead-in (escaped inside the class).
    assert "[^\\n\\r \\-1Aa]" in lp.label_grammar(("1", "-2", "a"), "brief")
    with pytest.raises(Exception, match="reasoning"):
        lp.label_grammar(("YES", "NO"), "long")


def test_sentence_reasoning_grammar_stops_the_reason_at_its_first_full_stop():
    g = lp.label_grammar(("YES", "NO"), "sentence")
    assert g == ('root ::= reason "\\n" "Answer: " ("YES" | "NO")\n'
                 f'reason ::= "{lp.REASON_LEAD}" [^\\n\\r NYny.] [^\\n\\r.]{{0,{lp.REASON_CHARS - 2}}} "."')
    # Unlike "brief", no full stop may appear before the one that ends the reason.
    assert "[^\\n\\r]{" in lp.label_grammar(("YES", "NO"), "brief")
    assert "sentence" in lp.REASONING_MODES and "brief" in lp.REASONING_MODES


def test_a_reason_lead_replaces_the_lead_in_and_keeps_the_rest_of_the_grammar():
    g = lp.label_grammar(("positive", "negative"), "sentence", 'Fact: The "decisive" detail is ')
    assert g == ('root ::= reason "\\n" "Answer: " ("positive" | "negative")\n'
                 'reason ::= "Fact: The \\"decisive\\" detail is " [^\\n\\r NPnp.] '
                 f'[^\\n\\r.]{{0,{lp.REASON_CHARS - 2}}} "."')
    # No lead (or an empty one) is the default "Fact: ".
    assert lp.label_grammar(("YES", "NO"), "brief", None) == lp.label_grammar(("YES", "NO"), "brief")
    assert lp.label_grammar(("YES", "NO"), "brief", "") == lp.label_grammar(("YES", "NO"), "brief")
    # Without reasoning there is no reason, so no lead either.
    assert lp.label_grammar(("YES", "NO"), None, "x ") == 'root ::= "Answer: " ("YES" | "NO")'


def test_a_sentence_reply_parses_to_its_final_label_even_when_the_fact_names_the_other():
    from fscale_tui.engine.ask.parsing import parse_reply

    labels = ("positive", "negative")
    reply = "Fact: The review is not negative at all.\nAnswer: positive"
    assert parse_reply(reply, labels).answer == "positive"
    assert parse_reply("Fact: 83 is an odd number.\nAnswer: NO", ("YES", "NO")).answer == "NO"


def test_extra_body_of_the_reasoning_voter_allows_a_short_reason_first():
    s = load_settings()
    adapter = lp.LocalAdapter(s.providers["local"], s)
    m = s.models["local-qwen-1.5b-r"]
    assert m.options["reasoning"] == "brief" and m.id == s.models["local-qwen-1.5b"].id
    body = adapter.extra_body(m, labels=("positive", "negative"), stream=False)
    assert body == {"grammar": lp.label_grammar(("positive", "negative"), "brief"),
                    "max_tokens": lp.REASON_MAX_TOKENS}
    assert body["grammar"].startswith('root ::= reason "\\n" "Answer: " ("positive" | "negative")')
    # Generation calls stay free (no grammar, no token cap from the variant).
    assert adapter.extra_body(m, labels=None, stream=True) is None


@pytest.mark.parametrize("alias,model_id", [("local-qwen-0.5b-s", ID_05), ("local-qwen-1.5b-s", ID_15)])
def test_extra_body_of_a_sentence_voter_caps_the_reason_at_one_sentence(alias, model_id):
    s = load_settings()
    adapter = lp.LocalAdapter(s.providers["local"], s)
    m = s.models[alias]
    assert m.id == model_id and m.options["reasoning"] == "sentence"
    body = adapter.extra_body(m, labels=("YES", "NO"), stream=False)
    assert body == {"grammar": lp.label_grammar(("YES", "NO"), "sentence"),
                    "max_tokens": lp.REASON_MAX_TOKENS}
    assert adapter.extra_body(m, labels=None, stream=False) is None


def test_extra_body_of_the_detail_voter_opens_its_sentence_with_the_decisive_detail():
    s = load_settings()
    adapter = lp.LocalAdapter(s.providers["local"], s)
    m = s.models["local-qwen-1.5b-d"]
    assert m.id == ID_15 and m.options["reasoning"] == "sentence"
    body = adapter.extra_body(m, labels=("positive", "negative"), stream=False)
    assert body == {"grammar": lp.label_grammar(("positive", "negative"), "sentence",
                                                "Fact: The decisive detail is "),
                    "max_tokens": lp.REASON_MAX_TOKENS}
    assert 'reason ::= "Fact: The decisive detail is " [^\\n\\r NPnp.] [^\\n\\r.]{0,' in body["grammar"]
    assert adapter.extra_body(m, labels=None, stream=False) is None


def test_a_detail_reply_parses_to_its_final_label():
    from fscale_tui.engine.ask.parsing import parse_reply

    reply = ('Fact: The decisive detail is that the reviewer calls it "hardly a masterpiece" '
             "but praises it.\nAnswer: positive")
    assert parse_reply(reply, ("positive", "negative")).answer == "positive"
    reply = "Fact: The decisive detail is that 18 + 18 equals 36, not 34.\nAnswer: NO"
    assert parse_reply(reply, ("YES", "NO")).answer == "NO"


def test_the_reasoning_option_is_a_known_model_key(fscale_home):
    (fscale_home / "config.toml").write_text(
        '[models.my-reasoner]\nprovider = "local"\nid = "qwen2.5-coder-0.5b-instruct-q4_k_m"\n'
        'weights = "qwen2.5-coder-0.5b-instruct-q4_k_m"\nreasoning = "brief"\n')
    s = load_settings()
    assert s.models["my-reasoner"].options["reasoning"] == "brief"
    assert not any("reasoning" in w for w in storage.warnings)


def test_the_reason_lead_option_is_a_known_model_key_and_reaches_the_grammar(fscale_home):
    (fscale_home / "config.toml").write_text(
        '[models.my-detail]\nprovider = "local"\nid = "qwen2.5-coder-1.5b-instruct-q4_k_m"\n'
        'weights = "qwen2.5-coder-1.5b-instruct-q4_k_m"\nreasoning = "sentence"\n'
        'reason_lead = "Fact: The clue is "\n')
    s = load_settings()
    m = s.models["my-detail"]
    assert m.options["reason_lead"] == "Fact: The clue is "
    assert not any("reason_lead" in w for w in storage.warnings)
    body = lp.LocalAdapter(s.providers["local"], s).extra_body(m, labels=("YES", "NO"))
    assert body == {"grammar": lp.label_grammar(("YES", "NO"), "sentence", "Fact: The clue is "),
                    "max_tokens": lp.REASON_MAX_TOKENS}
    assert 'reason ::= "Fact: The clue is " [' in body["grammar"]


# -- weights -----------------------------------------------------------------------------------
def _fake_weights(tmp_path: Path, monkeypatch, chunks: list[bytes], sha: str | None = None):
    parts = []
    for i, data in enumerate(chunks, 1):
        p = tmp_path / f"pkg{i}" / "data" / f"part{i:02d}.bin"
        p.parent.mkdir(parents=True)
        p.write_bytes(data)
        parts.append(p)
    joined = b"".join(chunks)
    w = weights.BuiltinWeights(name="tiny", title="Tiny", dist_prefix="tiny-part", version="1",
                               parts=len(chunks), sha256=sha or hashlib.sha256(joined).hexdigest(),
                               size=len(joined), upstream="x", license="MIT")
    monkeypatch.setattr(weights, "_part_path", lambda wt, i: parts[i - 1] if parts[i - 1].exists() else None)
    monkeypatch.setitem(weights.BUILTIN_WEIGHTS, "tiny", w)
    return w, joined, parts


def test_builtin_weights_are_joined_once_and_verified(tmp_path, monkeypatch):
    w, joined, parts = _fake_weights(tmp_path, monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 50, b"c"])
    cache = tmp_path / "cache"
    path = weights.resolve_gguf({"weights": "tiny"}, cache)
    assert path == cache / "local" / "tiny.gguf" and path.read_bytes() == joined
    assert weights.is_verified(path, w.sha256)
    # Second use: no re-join (the parts may even be gone) and no re-hash.
    for p in parts:
        p.unlink()
    calls = []
    monkeypatch.setattr(weights, "join_parts", lambda *a, **k: calls.append(a))
    assert weights.resolve_gguf({"weights": "tiny"}, cache) == path and not calls
    assert not list((cache / "local").glob(".*.tmp"))


def test_damaged_weights_are_refused_and_leave_no_file(tmp_path, monkeypatch):
    _fake_weights(tmp_path, monkeypatch, [b"abc", b"def"], sha="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(UsageError, match="sha256"):
        weights.resolve_gguf({"weights": "tiny"}, cache)
    assert not (cache / "local" / "tiny.gguf").exists()
    assert not list((cache / "local").glob(".*.tmp"))


def test_a_changed_joined_file_is_joined_again(tmp_path, monkeypatch):
    w, joined, _ = _fake_weights(tmp_path, monkeypatch, [b"x" * 10, b"y" * 10])
    cache = tmp_path / "cache"
    path = weights.resolve_gguf({"weights": "tiny"}, cache)
    path.write_bytes(b"truncated")
    assert weights.resolve_gguf({"weights": "tiny"}, cache).read_bytes() == joined


def test_missing_weight_packages_name_the_extra(tmp_path, monkeypatch):
    _fake_weights(tmp_path, monkeypatch, [b"x", b"y"])
    monkeypatch.setattr(weights, "_part_path", lambda wt, i: None)
    with pytest.raises(UsageError, match=r"tiny-part1.*fscale\[local\]"):
        weights.resolve_gguf({"weights": "tiny"}, tmp_path / "cache")


def test_user_gguf_path_is_used_as_is(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert weights.resolve_gguf({"gguf": str(f)}, tmp_path) == f
    with pytest.raises(UsageError, match="does not exist"):
        weights.resolve_gguf({"gguf": str(tmp_path / "nope.gguf")}, tmp_path, alias="mine")
    with pytest.raises(UsageError, match="needs gguf"):
        weights.resolve_gguf({}, tmp_path, alias="mine")


def test_hub_models_download_through_huggingface_hub(tmp_path, monkeypatch):
    calls = []

    def hf_hub_download(**kwargs):
        calls.append(kwargs)
        return str(tmp_path / "snap" / kwargs["filename"])

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    got = weights.resolve_gguf({"hf_repo": "org/repo", "hf_file": "m-q4.gguf", "hf_revision": "v1"}, tmp_path)
    assert got == tmp_path / "snap" / "m-q4.gguf"
    assert calls == [{"repo_id": "org/repo", "filename": "m-q4.gguf", "revision": "v1",
                      "cache_dir": str(tmp_path / "local" / "hf")}]
    with pytest.raises(UsageError, match="needs hf_file"):
        weights.resolve_gguf({"hf_repo": "org/repo"}, tmp_path)


def test_hub_models_without_huggingface_hub_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(UsageError, match="pip install huggingface_hub"):
        weights.resolve_gguf({"hf_repo": "org/repo", "hf_file": "m.gguf"}, tmp_path)


def test_user_local_models_from_config_toml(fscale_home, tmp_path):
    f = tmp_path / "mine.gguf"
    f.write_bytes(b"GGUF")
    (fscale_home / "config.toml").write_text(
        '[providers.local]\nidle_timeout = 60\n'
        f'[models.mine]\nprovider = "local"\nid = "my-model"\ngguf = "{f}"\nn_ctx = 1024\n'
        '[models.hub]\nprovider = "local"\nid = "hub-model"\nhf_repo = "org/r"\nhf_file = "x.gguf"\n')
    s = load_settings()
    assert s.models["mine"].options["gguf"] == str(f)
    spec = lp.server_spec(s.models["mine"], s.providers["local"], s)
    assert (spec.name, spec.gguf, spec.n_ctx, spec.idle_timeout) == ("my-model", str(f), 1024, 60.0)
    assert s.providers["local"].builtin  # tuning the built-in provider keeps it built in
    s.env["FSCALE_LOCAL_IDLE_TIMEOUT"] = "5"
    assert lp.server_spec(s.models["mine"], s.providers["local"], s).idle_timeout == 5.0


# -- state files -------------------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_state_of_a_dead_server_is_reported_and_cleaned(fscale_home):
    paths = Paths.resolve()
    path = servers.state_path(paths, ID_05)
    storage.write_json(path, {"name": ID_05, "pid": _dead_pid(), "url": "http://127.0.0.1:9",
                              "base_url": "http://127.0.0.1:9/v1", "port": 9})
    assert servers.status(paths, ID_05)["status"] == "stale"
    assert servers.known_servers(paths) == [ID_05]
    assert servers.stop_server(paths, ID_05) is False  # nothing was running
    assert not path.exists()
    assert servers.status(paths, ID_05)["status"] == "stopped"


def test_a_reused_pid_is_not_taken_for_our_server(fscale_home):
    # This test process is alive but is not a fscale server: never signalled, state is stale.
    paths = Paths.resolve()
    storage.write_json(servers.state_path(paths, ID_05),
                       {"name": ID_05, "pid": os.getpid(), "url": "http://127.0.0.1:9",
                        "base_url": "http://127.0.0.1:9/v1"})
    assert not servers.is_our_server(os.getpid())
    assert servers.status(paths, ID_05)["status"] == "stale"
    assert servers.stop_server(paths, ID_05) is False


def test_a_corrupt_state_file_is_moved_aside(fscale_home):
    paths = Paths.resolve()
    path = servers.state_path(paths, ID_05)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert servers.status(paths, ID_05)["status"] == "stopped"
    assert list(path.parent.glob(path.name + ".corrupt-*"))


# -- the adapter through the engine, against the loopback server -------------------------------
@pytest.fixture
def stub_as_local(installed, monkeypatch):
    """Every local model 'server' is the stub: ensure_server returns its URL."""
    with StubOpenAIServer() as srv:
        started = []

        def fake_ensure(paths, spec, **kw):
            started.append(spec)
            state = {"name": spec.name, "pid": os.getpid(), "base_url": srv.base_url}
            storage.write_json(servers.state_path(paths, spec.name), state)  # what serve.py writes
            return {**state, "started": True}

        monkeypatch.setattr(servers, "ensure_server", fake_ensure)
        monkeypatch.setattr(lp, "server_spec",
                            lambda m, p, s, *_: servers.ServerSpec(name=m.id, gguf="/x.gguf"))
        srv.started = started  # type: ignore[attr-defined]
        yield srv


async def test_scale_on_the_local_panel_sends_grammar_and_variant_params(stub_as_local):
    from fscale_tui.engine.base.events import VoteStarted
    from fscale_tui.engine.session import Engine
    from fscale_tui.engine.base.calls import ScaleRequest

    srv = stub_as_local
    srv.script(ID_15, Behaviour(reply="positive", latency=0.05))
    srv.script(ID_05, Behaviour(reply="positive", latency=0.05))
    events = []
    async with Engine() as engine:
        async for ev in engine.scale_events(ScaleRequest(question="Nice film?",
                                                         answers=["positive", "negative"])):
            events.append(ev)
    result = events[-1].result
    assert result.answer == "positive" and len(result.members) == 3
    started = {e.model: e for e in events if isinstance(e, VoteStarted)}
    assert set(started) == {"local-qwen-1.5b-d", "local-qwen-0.5b-s", "local-qwen-1.5b-s"}
    assert started["local-qwen-1.5b-d"].variant == "1.5B, one sentence naming the decisive detail first"
    assert started["local-qwen-0.5b-s"].variant == "0.5B, one-sentence fact first"
    bodies = [r.body for r in srv.requests if r.path.endswith("/chat/completions")]
    detail = lp.label_grammar(("positive", "negative"), "sentence", lp.DETAIL_LEAD)
    sentence = lp.label_grammar(("positive", "negative"), "sentence")
    # The two 1.5B members differ by their grammar's lead-in; a vote can be cancelled once two
    # agree.
    assert detail != sentence
    assert bodies and {(b["model"], b["grammar"]) for b in bodies} <= {
        (ID_15, detail), (ID_05, sentence), (ID_15, sentence)}
    for b in bodies:  # every member: a short reason first, few tokens, greedy
        assert b["temperature"] == 0.0 and "seed" not in b
        assert b["max_tokens"] == lp.REASON_MAX_TOKENS
    # One server per distinct model per process, even with three concurrent members.
    assert sorted(s.name for s in srv.started) == sorted({ID_05, ID_15})


async def test_generation_calls_are_not_constrained(stub_as_local):
    from fscale_tui.engine.wire.client import ChatClient

    srv = stub_as_local
    srv.script(ID_05, Behaviour(reply="free text"))
    s = load_settings()
    async with ChatClient(s) as client:
        reply = await client.chat(s.models["local-qwen-0.5b"], [{"role": "user", "content": "hi"}])
        assert await client.list_models("local") in ([], sorted({ID_05, ID_15}))
    assert reply.content == "free text"
    body = [r.body for r in srv.requests if r.body][-1]
    assert "grammar" not in body


async def test_a_model_that_cannot_start_fails_as_a_vote_not_the_run(installed, monkeypatch):
    from fscale_tui.engine.session import Engine
    from fscale_tui.engine.base.calls import ScaleRequest

    def broken(paths, spec, **kw):
        raise servers.LocalServerError("boom: the local server exited during start-up")

    monkeypatch.setattr(servers, "ensure_server", broken)
    monkeypatch.setattr(lp, "server_spec", lambda m, p, s, *_: servers.ServerSpec(name=m.id, gguf="/x"))
    async with Engine() as engine:
        result = await engine.scale(ScaleRequest(question="q?", answers=["YES", "NO"],
                                                 models=["local-qwen-0.5b"]))
    assert result.status == "all_failed"
    assert "boom" in (result.votes[0].error or "")


def test_local_cli_status_lists_models_without_starting_anything(fscale_home):
    from typer.testing import CliRunner

    from fscale_tui.cli import app

    res = CliRunner().invoke(app, ["local", "status", "--json"], env={"FSCALE_HOME": str(fscale_home)})
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {r["server"] for r in rows} >= {ID_05, ID_15}
    assert all(r["status"] == "stopped" for r in rows)
    res = CliRunner().invoke(app, ["local", "stop", "nope"], env={"FSCALE_HOME": str(fscale_home)})
    assert res.exit_code == 2 and "not a local model" in res.output
    res = CliRunner().invoke(app, ["local", "path"], env={"FSCALE_HOME": str(fscale_home)})
    assert res.stdout.strip() == str(fscale_home / "state" / "local")


# -- first use: progress through the engine's on_status hook (issue 12, finding 5) --------------
async def test_first_use_reports_the_bytes_joined_and_the_server_start(stub_as_local, tmp_path,
                                                                       monkeypatch):
    """Joining the weights and starting the server are reported as engine events on the
    engine's ``on_status`` hook (the CLI draws them on stderr), before the first vote."""
    from fscale_tui.engine.base.events import (Preparing, ServerReady, ServerStarting, VoteReceived)
    from fscale_tui.engine.session import Engine
    from fscale_tui.engine.base.calls import ScaleRequest

    w, joined, _ = _fake_weights(tmp_path, monkeypatch, [b"GGUF" + b"a" * 100, b"b" * 50, b"c"])
    monkeypatch.setitem(weights.BUILTIN_WEIGHTS, ID_05, w)  # the 0.5B model gets tiny weights
    stub_as_local.script(ID_05, Behaviour(reply="YES"))
    request = ScaleRequest(question="q?", answers=["YES", "NO"], models=("local-qwen-0.5b",))
    seen: list = []
    async with Engine(on_status=seen.append) as engine:
        async for event in engine.scale_events(request):
            seen.append(event)
    prep = [e for e in seen if isinstance(e, Preparing)]
    assert [e.done_bytes for e in prep] == [0, 104, 154, 155]
    assert all(e.total_bytes == len(joined) and e.what == "Tiny" and e.model == "local-qwen-0.5b"
               for e in prep)
    kinds = [type(e) for e in seen if isinstance(e, (Preparing, ServerStarting, ServerReady,
                                                     VoteReceived))]
    assert kinds == [Preparing] * 4 + [ServerStarting, ServerReady, VoteReceived]
    ready = next(e for e in seen if isinstance(e, ServerReady))
    assert ready.server == ID_05 and ready.elapsed_s >= 0
    assert (Paths.resolve().cache_dir / "local" / "tiny.gguf").read_bytes() == joined
    # Joined once: the next engine has nothing to join.
    again: list = []
    async with Engine(on_status=again.append) as engine:
        await engine.scale(request)
    assert not [e for e in again if isinstance(e, Preparing)]


async def test_without_a_hook_nothing_is_joined_ahead(stub_as_local, tmp_path, monkeypatch):
    """No on_status hook (the TUI, the Python API): the start path is the one it was."""
    from fscale_tui.engine.session import Engine
    from fscale_tui.engine.base.calls import ScaleRequest

    w, _, _ = _fake_weights(tmp_path, monkeypatch, [b"GGUF" + b"a" * 10])
    monkeypatch.setitem(weights.BUILTIN_WEIGHTS, ID_05, w)
    stub_as_local.script(ID_05, Behaviour(reply="YES"))
    async with Engine() as engine:
        result = await engine.scale(ScaleRequest(question="q?", answers=["YES", "NO"],
                                                 models=("local-qwen-0.5b",)))
    assert result.answer == "YES"
    assert not (Paths.resolve().cache_dir / "local" / "tiny.gguf").exists()
