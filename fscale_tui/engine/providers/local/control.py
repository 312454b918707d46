"""The local model servers as the views see them: status, start, stop, where they live.

``engine.local`` on the :class:`~fscale_tui.engine.session.Engine` facade; ``fscale local``
and any other view use this instead of the server machinery (``servers``, ``weights``).
Blocking (starting a server waits for the model to load): views call it directly or from a
thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...base.errors import NoProviderError, UsageError
from . import provider as lp
from . import servers, weights

if TYPE_CHECKING:
    from ...base.settings import Settings


class LocalServers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def directory(self) -> Path:
        return servers.local_dir(self.settings.paths)

    @property
    def installed(self) -> bool:
        return lp.runtime_installed()

    help = lp.LOCAL_HELP

    def _models(self) -> list[Any]:
        s = self.settings
        return [m for m in s.models.values()
                if (p := s.providers.get(m.provider)) is not None and p.type == "local"]

    def targets(self, names: list[str] | None = None) -> dict[str, list[Any]]:
        """Server name (model id) -> the aliases it serves, for the given aliases/ids (or all)."""
        models = self._models()
        if names:
            chosen = []
            for name in names:
                hits = [m for m in models if name in (m.alias, m.id)]
                if not hits:
                    known = ", ".join(m.alias for m in models) or "none"
                    raise UsageError(f"{name!r} is not a local model (local models: {known})")
                chosen += hits
            models = chosen
        out: dict[str, list[Any]] = {}
        for m in models:
            out.setdefault(m.id, []).append(m)
        return out

    def status(self) -> list[dict[str, Any]]:
        """One row per server: installed, weights joined, running (pid, URL, RAM, idle)."""
        rows = []
        for name, members in self.targets().items():
            first = members[0]
            info = servers.status(self.settings.paths, name)
            w = weights.BUILTIN_WEIGHTS.get(str(first.options.get("weights", "")))
            joined = (weights.builtin_path(w, self.settings.paths.cache_dir).exists()
                      if w is not None else None)
            rows.append({
                "server": name, "aliases": [m.alias for m in members], "provider": first.provider,
                "installed": lp.model_installed(first),
                "weights": weights.describe_source(first.options), "joined": joined,
                "status": info["status"], "pid": info.get("pid"), "url": info.get("base_url"),
                "rss_mb": round(info["rss_bytes"] / 2**20) if info.get("rss_bytes") else None,
                "idle_s": info.get("idle_s"), "stops_in_s": info.get("stops_in_s"),
                "log": str(servers.log_path(self.settings.paths, name)),
            })
        return rows

    def start(self, name: str, emit: Any = None) -> dict[str, Any]:
        """Start (or find running) one server; its state with ``started``. ``emit`` receives
        the slow first-use steps as events (``Preparing``, ``ServerStarting``, ``ServerReady``)."""
        if not lp.runtime_installed():
            raise NoProviderError(lp.LOCAL_HELP)
        model = next(iter(self.targets([name]).values()))[0]
        provider = self.settings.providers[model.provider]
        return lp.start_server(model, provider, self.settings, emit)

    def stop(self, names: list[str] | None = None) -> list[str]:
        """Stop the servers of ``names`` (aliases, model ids, or the server names that
        ``fscale local status`` lists; default: every known one); returns those stopped."""
        if not names:
            return servers.stop_all(self.settings.paths)
        known = servers.known_servers(self.settings.paths)
        others = [n for n in names if n not in known]
        chosen = [n for n in names if n in known] + (list(self.targets(others)) if others else [])
        return [name for name in dict.fromkeys(chosen)
                if servers.stop_server(self.settings.paths, name)]

    def default_models(self) -> list[str]:
        return list(self.settings.panels.get("local") or [])
