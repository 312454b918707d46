"""The engine is type-checked, and what is handed around is typed.

- ``mypy --strict fscale_tui/engine`` (the line ``.ci/run`` and the README's "Install and test"
  run; settings in ``[tool.mypy]`` of pyproject.toml) passes.
- No parameter, attribute or property named ``engine``, ``settings``, ``registry`` or
  ``client`` (or with a leading underscore) is annotated ``Any`` anywhere in the package: they
  are the Engine, Settings, Registry and the HTTP/Redis clients, and say so.
- The package ships ``py.typed`` (PEP 561), so code using ``fscale_tui`` is checked against
  these annotations.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "fscale_tui"
TYPE_CHECK = "python -m mypy --strict fscale_tui/engine"
#: The names whose annotation must say what they are.
TYPED_NAMES = re.compile(r"_?(engine|settings|registry|client)")
#: An annotation that says nothing: Any, alone or with None.
ANY = re.compile(r"(typing\.)?Any( \| None)?|None \| (typing\.)?Any|Optional\[(typing\.)?Any\]")


@pytest.mark.slow
def test_mypy_strict_passes_on_the_engine() -> None:
    pytest.importorskip("mypy", reason="mypy is in the [dev] extra")
    pytest.importorskip("redis", reason="the engine's types include the redis client's: the "
                                        "[fleet] extra (pip install -e '.[fleet]')")
    done = subprocess.run([sys.executable, *TYPE_CHECK.split()[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.startswith("Success: no issues found"), done.stdout


def test_ci_and_readme_run_the_type_check_before_the_tests() -> None:
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert TYPE_CHECK in ci and ci.index(TYPE_CHECK) < ci.index("python -m pytest -q")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    mypy = config["tool"]["mypy"]
    assert mypy["strict"] is True and mypy["files"] == ["fscale_tui/engine"]
    assert any(dep.startswith("mypy") for dep in config["project"]["optional-dependencies"]["dev"])


def _any_annotations(source: str, where: str) -> list[str]:
    """``where:line: name: annotation`` for each engine/settings/registry/client annotated Any:
    parameters, annotated assignments (``x: Any``, ``self._x: Any``) and the return of a
    function or property with one of those names."""
    found = []

    def check(name: str, annotation: ast.expr | None, line: int) -> None:
        if annotation is None or not TYPED_NAMES.fullmatch(name):
            return
        text = ast.unparse(annotation).strip("'\"")
        if ANY.fullmatch(text):
            found.append(f"{where}:{line}: {name}: {text}")

    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                check(arg.arg, arg.annotation, arg.lineno)
            check(node.name, node.returns, node.lineno)
        elif isinstance(node, ast.AnnAssign):
            target = node.target
            name = target.id if isinstance(target, ast.Name) else \
                target.attr if isinstance(target, ast.Attribute) else ""
            check(name, node.annotation, node.lineno)
    return found


def test_the_scan_finds_each_way_of_writing_any() -> None:
    """The scan below can fail: every spelling of an untyped engine/settings/... is found, and
    other names or real types are not."""
    sample = (
        "from typing import Any, Optional\n"
        "def f(settings: Any = None, *, registry: 'Any') -> None: ...\n"
        "class C:\n"
        "    def __init__(self) -> None:\n"
        "        self._client: Any | None = None\n"
        "        self.engine: Optional[Any] = None\n"
        "    @property\n"
        "    def settings(self) -> Any: ...\n"
        "def g(settings_path: Any, engine: int, other: Any) -> dict[str, Any]: ...\n")
    found = sorted(hit.split(": ", 1)[1] for hit in _any_annotations(sample, "sample.py"))
    assert found == sorted(["settings: Any", "registry: Any", "settings: Any",
                            "_client: Any | None", "engine: Optional[Any]"])


def test_no_engine_settings_registry_or_client_is_annotated_any() -> None:
    found = [hit for path in sorted(PACKAGE.rglob("*.py"))
             for hit in _any_annotations(path.read_text(encoding="utf-8"),
                                         str(path.relative_to(REPO)))]
    assert not found, "annotate these with their real type:\n" + "\n".join(found)


def test_the_package_ships_py_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["fscale_tui"]
