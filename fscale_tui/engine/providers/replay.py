"""The ``replay`` provider: answers chat completions from recorded outputs, offline, at zero cost.

Config::

    [providers.mmlu]
    type = "replay"
    path = "~/data/mmlu_replay.jsonl"   # relative paths are relative to config.toml's directory

The file is JSONL, one recorded reply per line::

    {"model": "vendor/model-a", "id": "q-17", "prompt_sha256": "9f2c…", "reply": "Answer: B"}

``model`` is the provider's model id (the ``id`` of a ``[models.X]`` entry, i.e. the request's
``model`` field). A line needs ``id`` or ``prompt_sha256`` (or both). A request matches:

1. by task id, when the request body carries ``metadata.fscale_task_id`` (``fscale profile``
   and ``fscale calibrate`` send it to replay providers only), else
2. by ``prompt_sha256`` = sha256 of the request's ``messages`` serialised as canonical JSON
   (:func:`prompt_sha256`), so plain ``fscale scale`` / ``-k auto`` calls replay too.

A reply of ``null`` or ``""`` is a recorded reply with no answer (the parser finds no vote).
A request with no recorded reply is an HTTP 422 whose message names the model and the id or
prompt hash: never a silent default. (Not 404: a missing recording says nothing about the
model's health, so it must not mark the model unavailable for later calls.)

:func:`replay_lines_from_calls` turns call-log records into replay lines
(``fscale history export --replay`` uses it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base.calls import TASK_ID_FIELD
from ..base.errors import ConfigError
from ..base.jsonl import JSONLError, iter_jsonl, iter_lines
from ..base.settings import ProviderConfig, Settings

if TYPE_CHECKING:  # httpx is imported when the first request is made
    import httpx

TYPE = "replay"
PROVIDER_OPTIONS = ("path",)
MODEL_OPTIONS: tuple[str, ...] = ()
#: Requests carry the task id (``metadata``) so that a recorded answer is found by it.
TAKES_TASK_ID = True


def usable(provider: ProviderConfig, env: Mapping[str, str] | None = None) -> bool:
    """Recorded replies need no key."""
    return True


def canonical_messages(messages: list[dict[str, Any]]) -> str:
    """The exact text hashed for ``prompt_sha256``: role and content of each message."""
    slim = [{"role": m.get("role"), "content": m.get("content")} for m in messages]
    return json.dumps(slim, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def prompt_sha256(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(canonical_messages(messages).encode("utf-8")).hexdigest()


class ReplayIndex:
    """(model id, task id) and (model id, prompt hash) -> recorded reply."""

    def __init__(self) -> None:
        self.by_id: dict[tuple[str, str], str | None] = {}
        self.by_prompt: dict[tuple[str, str], str | None] = {}
        self.models: set[str] = set()

    @classmethod
    def from_lines(cls, lines: Iterable[str | bytes], origin: str = "replay file") -> "ReplayIndex":
        """Index already-split lines (each one record; see :mod:`.jsonl`)."""
        return cls._from_parsed(iter_lines(lines), origin)

    @classmethod
    def _from_parsed(cls, parsed: Iterable[tuple[int, Any]], origin: str) -> "ReplayIndex":
        index = cls()
        for lineno, obj in parsed:
            try:
                if isinstance(obj, JSONLError):
                    raise obj
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                model = obj["model"]
                reply = obj.get("reply")
                if reply is not None and not isinstance(reply, str):
                    raise ValueError("reply must be a string or null")
                if obj.get("id") is None and not obj.get("prompt_sha256"):
                    raise ValueError("needs 'id' or 'prompt_sha256'")
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"{origin}:{lineno}: {exc}") from None
            model = str(model)
            index.models.add(model)
            if obj.get("id") is not None:
                index.by_id[(model, str(obj["id"]))] = reply
            if obj.get("prompt_sha256"):
                index.by_prompt[(model, str(obj["prompt_sha256"]))] = reply
        return index

    @classmethod
    def load(cls, path: Path) -> "ReplayIndex":
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"replay file {str(path)!r} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"replay file {str(path)!r} cannot be read: {exc.strerror}") from None
        return cls._from_parsed(iter_jsonl(data), str(path))

    def lookup(self, model: str, task_id: str | None, sha: str) -> tuple[bool, str | None]:
        """-> (found, reply)."""
        if task_id is not None and (model, task_id) in self.by_id:
            return True, self.by_id[(model, task_id)]
        if (model, sha) in self.by_prompt:
            return True, self.by_prompt[(model, sha)]
        return False, None


def estimate_tokens(text: str) -> int:
    """Recorded replies carry no usage: about 4 characters per token (OpenAI's rule of thumb)."""
    return (len(text) + 3) // 4


def _completion(model: str, reply: str | None, prompt_tokens: int = 0) -> dict[str, Any]:
    text = reply or ""
    completion = estimate_tokens(text)
    return {
        "id": "replay-" + hashlib.sha1(f"{model}{text}".encode()).hexdigest()[:12],
        "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                  "total_tokens": prompt_tokens + completion, "estimated": True},
    }


def _sse(model: str, reply: str | None) -> Iterator[bytes]:
    chunk = {"object": "chat.completion.chunk", "model": model,
             "choices": [{"index": 0, "delta": {"content": reply or ""}, "finish_reason": "stop"}]}
    yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


class ReplayAdapter:
    """In-process transport answering ``POST /chat/completions`` and ``GET /models``."""

    BASE = "http://replay.invalid/v1"

    def __init__(self, provider: ProviderConfig, index: ReplayIndex) -> None:
        self.provider = provider
        self.index = index
        import httpx

        self.transport = httpx.MockTransport(self._handle)

    async def base_url(self, model: Any) -> str:
        return self.BASE

    async def list_models(self) -> list[str]:
        return sorted(self.index.models)

    async def aclose(self) -> None:
        return None

    def _error(self, status: int, message: str) -> httpx.Response:
        import httpx

        return httpx.Response(status, json={"error": {"message": message, "type": "replay"}})

    def _handle(self, request: httpx.Request) -> httpx.Response:
        import httpx

        if request.method == "GET" and request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": m, "object": "model"} for m in sorted(self.index.models)]})
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return self._error(404, f"replay: no such endpoint {request.url.path}")
        try:
            body = json.loads(request.content)
            model = str(body["model"])
            messages = body["messages"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "replay: the request is not a chat completion request")
        meta = body.get("metadata") or {}
        task_id = meta.get(TASK_ID_FIELD) if isinstance(meta, dict) else None
        task_id = None if task_id is None else str(task_id)
        key = (model, task_id)
        if task_id is not None and key in self.index.by_id:
            found, reply, sha = True, self.index.by_id[key], ""  # the hash is not needed
        else:
            sha = prompt_sha256(messages)
            found, reply = self.index.lookup(model, task_id, sha)
        if not found:
            what = f"id {task_id!r} (prompt sha256 {sha[:12]}…)" if task_id else f"prompt sha256 {sha}"
            return self._error(422, f"replay provider {self.provider.name!r} has no recorded reply "
                                    f"for model {model!r} and {what}")
        if body.get("stream"):
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=b"".join(_sse(model, reply)))
        prompt = estimate_tokens("".join(str(m.get("content") or "") for m in messages
                                         if isinstance(m, dict)))
        return httpx.Response(200, json=_completion(model, reply, prompt))


_CACHE: dict[tuple[str, float, int], ReplayIndex] = {}


def replay_path(provider: ProviderConfig, settings: Settings | None) -> Path:
    raw = provider.options.get("path")
    if not raw:
        raise ConfigError(f"[providers.{provider.name}] type = \"replay\" needs path = \"….jsonl\"")
    path = Path(str(raw)).expanduser()
    if not path.is_absolute() and settings is not None:
        path = settings.paths.config_dir / path
    return path


def load_index(path: Path) -> ReplayIndex:
    """Parsed once per process and file version (large replay files are read only once)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"replay file {str(path)!r} does not exist") from None
    key = (str(path), st.st_mtime, st.st_size)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = ReplayIndex.load(path)
    return _CACHE[key]


def make_adapter(provider: ProviderConfig, settings: Settings) -> ReplayAdapter:
    return ReplayAdapter(provider, load_index(replay_path(provider, settings)))


# -- export from the call log ---------------------------------------------------------------

def replay_lines_from_calls(calls: Iterable[Mapping[str, Any]],
                            model_ids: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """Turn call-log records into replay lines (``fscale history export --replay``).

    Each call is a mapping with ``id``, ``question``, ``context`` (or None), ``labels`` (list or
    JSON text) and ``replies``: a list of mappings with ``model`` (alias), ``raw`` (the reply
    text) and optionally ``status``/``role``. ``model_ids`` maps aliases to provider model ids
    (``{m.alias: m.id for m in settings.models.values()}``); unknown aliases are kept as they
    are. Failed replies (no raw text and status ``failed``/``cancelled``/``replaced``) and calls
    whose text was not logged are skipped. The prompt hash is computed from the same messages
    ``scale`` sends, so the exported file replays the logged calls exactly.
    """
    from ..base.prompts import build_messages

    model_ids = model_ids or {}
    for call in calls:
        question = call.get("question")
        labels = call.get("labels")
        if isinstance(labels, str):
            try:
                labels = json.loads(labels)
            except ValueError:
                labels = [x.strip() for x in labels.split(",") if x.strip()]
        if not question or not labels:
            continue
        sha = prompt_sha256(build_messages(question, tuple(labels), call.get("context")))
        for reply in call.get("replies") or []:
            if reply.get("status") in ("failed", "cancelled", "replaced", "pending"):
                continue
            alias = str(reply.get("model"))
            line = {"model": model_ids.get(alias, alias), "prompt_sha256": sha,
                    "reply": reply.get("raw")}
            if call.get("id") is not None:
                line["id"] = str(call["id"])
            yield line


def write_replay_file(path: Path, lines: Iterable[Mapping[str, Any]]) -> int:
    """Write replay lines atomically; returns how many."""
    from ..base import storage

    text = []
    for line in lines:
        text.append(json.dumps(line, ensure_ascii=False))
    storage.atomic_write_text(path, "\n".join(text) + ("\n" if text else ""))
    return len(text)
