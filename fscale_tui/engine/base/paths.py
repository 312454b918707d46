"""Where fscale keeps its files.

platformdirs gives the per-user config, data, state and cache directories for the app name
"fscale". Setting ``FSCALE_HOME=/some/dir`` puts everything under that one directory instead
(``config.toml`` at its top, ``data/``, ``state/``, ``cache/`` beside it); the tests rely on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "fscale"
HOME_ENV = "FSCALE_HOME"


@dataclass(frozen=True)
class Paths:
    """The four directories and the config file, resolved once per process."""

    config_dir: Path
    data_dir: Path
    state_dir: Path
    cache_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @classmethod
    def resolve(cls, env: Mapping[str, str] | None = None) -> "Paths":
        env = os.environ if env is None else env
        home = env.get(HOME_ENV)
        if home:
            root = Path(home).expanduser()
            return cls(root, root / "data", root / "state", root / "cache")
        # Imported lazily: platformdirs is only needed when FSCALE_HOME is not set.
        import platformdirs

        return cls(
            platformdirs.user_config_path(APP_NAME),
            platformdirs.user_data_path(APP_NAME),
            platformdirs.user_state_path(APP_NAME),
            platformdirs.user_cache_path(APP_NAME),
        )

    def ensure(self, which: str) -> Path:
        """Return one of the directories (``"data"``, ``"state"``, ...), creating it (0700) if needed."""
        from .storage import ensure_dir

        path: Path = ensure_dir(getattr(self, f"{which}_dir"))
        # fscale's own folders are private (an older version created them 0755).
        try:
            st = path.stat()
            if st.st_uid == os.getuid() and st.st_mode & 0o077:
                os.chmod(path, st.st_mode & 0o700)
        except OSError:
            pass
        return path
