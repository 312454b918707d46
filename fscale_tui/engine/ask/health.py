"""Model health: probes, and the verdicts shared by every process through the state directory.

``dead`` (HTTP 410, end of life) holds until that catalogue entry changes (its provider, id or
base URL); ``unavailable`` (404) and ``rate_limited`` (429) hold for a TTL (``health_ttl``,
5 minutes by default, or the server's Retry-After). Later processes skip such models and
substitute them instead of wasting calls.

Where verdicts live is the coordination backend's business (:mod:`.coordination`): the embedded
one keeps ``health.json`` in the state directory (read once per process, as before); Redis keeps
one key per model with its TTL, and this store reads a local copy refreshed in a thread at most
once a second, so ``is_down`` (called on the event loop) never waits for the network.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..base import storage
from ..base.settings import ModelConfig, Settings
from ..base.redact import redact

if TYPE_CHECKING:
    from ..wire.coordination import SharedView

DOWN = ("dead", "unavailable", "rate_limited")
PROBE_MESSAGES = [{"role": "user", "content": "Reply with the single word OK."}]


def fingerprint(model: ModelConfig, settings: Settings) -> str:
    provider = settings.providers.get(model.provider)
    base = provider.base_url if provider else ""
    return hashlib.sha256(f"{model.provider}|{model.id}|{base}".encode()).hexdigest()[:16]


def status_for_error(kind: str) -> str:
    return kind if kind in DOWN else "error"


@dataclass
class HealthStore:
    settings: Settings
    #: Runs the file write elsewhere (the engine's background writer), so a verdict never
    #: makes the event loop wait on another process's lock; None writes in place.
    submit: Callable[[Callable[[], Any]], Any] | None = None
    #: Where verdicts are shared (:class:`.coordination.HealthBackend`); None: health.json.
    backend: Any = None

    @property
    def path(self) -> Path:
        return self.settings.paths.state_dir / "health.json"

    def __post_init__(self) -> None:
        self._cache: dict[str, Any] | None = None
        self._view: SharedView | None = None
        if self.backend is not None and self.backend.shared_refresh:
            from ..wire.coordination import SharedView

            self._view = SharedView(self.backend.load)

    def entries(self, refresh: bool = False) -> dict[str, Any]:
        if self._view is not None:
            return self._view.get(refresh)
        if self._cache is None or refresh:
            self._cache = (self.backend.load() if self.backend is not None
                           else storage.read_json(self.path))
        return self._cache

    def verdict(self, alias: str, now: float | None = None) -> str | None:
        """The standing down-verdict for a model, or None if it may be used."""
        entry = self.entries().get(alias)
        model = self.settings.models.get(alias)
        if not entry or model is None or entry.get("status") not in DOWN:
            return None
        if entry.get("fingerprint") != fingerprint(model, self.settings):
            return None  # the catalogue entry changed: the old verdict no longer applies
        expires = entry.get("expires_at")
        if expires is not None and (now or time.time()) >= expires:
            return None
        status: str = entry["status"]
        return status

    def is_down(self, alias: str) -> bool:
        return self.verdict(alias) is not None

    def record(self, model: ModelConfig, status: str, *, latency_s: float | None = None,
               detail: str = "", retry_after: float | None = None) -> None:
        """Persist one verdict (under the cross-process lock)."""
        now = time.time()
        if status == "dead":
            expires = None
        elif status in DOWN:
            expires = now + (retry_after if status == "rate_limited" and retry_after
                             else float(self.settings.get("health_ttl")))
        else:
            expires = None
        entry = {"status": status, "checked_at": now, "expires_at": expires,
                 "latency_s": latency_s, "detail": (redact(detail) or "")[:200],
                 "fingerprint": fingerprint(model, self.settings)}

        def change(doc: dict[str, Any]) -> None:
            doc[model.alias] = entry

        if self._view is not None:
            self._view.put(model.alias, entry)
        else:
            self.entries()[model.alias] = entry
        ttl = None if expires is None else max(0.0, expires - now)
        backend = self.backend

        def write() -> None:
            try:
                if backend is not None:
                    backend.store(model.alias, entry, ttl)
                else:
                    storage.update_json(self.path, change)
            except OSError as exc:  # a read-only or full home: said once, the run goes on
                storage.warn_state_unwritten(exc, self.path)

        if self.submit is not None:
            self.submit(write)
        else:
            write()
