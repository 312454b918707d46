"""The layers are enforced, not just described (ARCHITECTURE.md): the import contracts in
pyproject.toml hold, the diagram is the layers contract, and grimp (type-checking and
in-function imports included) finds no circle and no import from a lower layer to a higher one."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") >= 5


def test_modules_that_imported_each_other_no_longer_do():
    graph = _graph()
    for a, b in [("fscale_tui.engine.catalog.config", "fscale_tui.engine.providers.local.provider"),
                 ("fscale_tui.engine.catalog.config", "fscale_tui.engine.providers"),
                 ("fscale_tui.app", "fscale_tui.screens.help")]:
        there = graph.find_shortest_chain(importer=a, imported=b)
        back = graph.find_shortest_chain(importer=b, imported=a)
        assert there is None or back is None, f"{a} and {b} import each other: {there} / {back}"


def test_adding_a_strategy_or_a_provider_is_one_module():
    """The registries find their members by scanning their folder."""
    from fscale_tui.engine import providers, strategies

    assert set(strategies.names()) >= {"judge", "vote", "weighted", "usc", "tournament",
                                       "beam", "dvts"}
    assert set(providers.provider_types()) == {"openai", "local", "replay"}


# -- the layers ----------------------------------------------------------------------------------
def _contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _layers_contract() -> dict:
    (contract,) = [c for c in _contracts() if c["type"] == "layers"]
    return contract


def _split_layer(layer: str) -> tuple[str, list[str]]:
    """``"a | b"`` -> ("|", [a, b]) (independent siblings); ``"a : b"`` -> (":", ...)."""
    sep = "|" if "|" in layer else ":"
    return sep, [m.strip() for m in layer.split(sep)]


@cache
def _graph():
    import grimp

    # grimp reads every import statement, those inside functions included
    return grimp.build_graph("fscale_tui", exclude_type_checking_imports=False, cache_dir=None)


def _diagram() -> list[tuple[str, str, list[str]]]:
    """ARCHITECTURE.md's layer diagram: (name, separator, modules) per layer line, top first."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    block = text.split("```text\n", 1)[1].split("```", 1)[0]
    layers = []
    for line in block.splitlines():
        m = re.match(r"^ (\w[\w |]*?)\s{2,}(\S.*)$", line)
        if not m:
            continue
        sep = "|" if " | " in m.group(2) else ":"
        paths = [p.strip() for p in m.group(2).split(f" {sep} ")]
        assert all(p.endswith(("/", ".py")) for p in paths), line
        modules = ["fscale_tui." + p.removesuffix("/").removesuffix(".py").replace("/", ".")
                   for p in paths]
        layers.append((m.group(1).strip(), sep, modules))
    return layers


def test_the_diagram_is_the_layers_contract():
    """ARCHITECTURE.md's diagram names the contract's layers, in its order, with the same
    modules and the same kind of siblings; the contract's name spells the same layer names."""
    contract = _layers_contract()
    diagram = _diagram()
    assert [(sep, mods) for _, sep, mods in diagram] == \
        [_split_layer(layer) for layer in contract["layers"]]
    names = contract["name"].split(":", 1)[1].split(" > ")
    assert [name for name, _, _ in diagram] == [n.strip() for n in names]


def _layer_of(module: str) -> tuple[int, str] | None:
    """(index of the layer, which sibling) of a module; None when it is in no layer."""
    for i, layer in enumerate(_layers_contract()["layers"]):
        for sibling in _split_layer(layer)[1]:
            if module == sibling or module.startswith(sibling + "."):
                return i, sibling
    return None


def test_every_module_is_in_a_layer():
    """A new module or folder has a place in the diagram (only the package roots have none)."""
    homeless = sorted(m for m in _graph().modules
                      if _layer_of(m) is None and m not in ("fscale_tui", "fscale_tui.engine"))
    assert homeless == []


def test_no_import_climbs_a_layer_nor_crosses_independent_siblings():
    """Every import (type-checking and in-function ones included) goes down, or stays inside
    its layer between siblings that may import each other. ignore_imports is empty: a deferred
    import is no excuse for climbing."""
    contract = _layers_contract()
    assert not contract.get("ignore_imports")
    graph = _graph()
    # the graph does hold in-function imports: this one runs inside a function
    assert "fscale_tui.engine.catalog.config" in graph.find_modules_directly_imported_by(
        "fscale_tui.cli.local")
    bad = []
    for importer in graph.modules:
        here = _layer_of(importer)
        for imported in graph.find_modules_directly_imported_by(importer):
            there = _layer_of(imported)
            if here is None or there is None or here[1] == there[1]:
                continue
            independent = _split_layer(contract["layers"][here[0]])[0] == "|"
            if there[0] < here[0] or (there[0] == here[0] and independent):
                bad.append(f"{importer} -> {imported}")
    assert bad == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_among_modules_nor_engine_packages():
    graph = _graph()
    modules = {m: {i for i in graph.find_modules_directly_imported_by(m) if i.startswith("fscale_tui")}
               for m in graph.modules}
    assert _cycles(modules) == []

    def package(m: str) -> str:
        return ".".join(m.split(".")[:3])

    packages: dict[str, set[str]] = {}
    for m, imported in modules.items():
        if m.startswith("fscale_tui.engine."):
            packages.setdefault(package(m), set()).update(
                package(i) for i in imported
                if i.startswith("fscale_tui.engine.") and package(i) != package(m))
    assert _cycles(packages) == []


def test_a_stale_ignore_entry_is_an_error(tmp_path):
    """ignore_imports lists exactly the imports that need it: an entry that matches no import
    breaks the check."""
    text = (REPO / "pyproject.toml").read_text()
    entry = '"fscale_tui.cli.local -> fscale_tui.engine.catalog.config",\n'
    assert entry in text
    stale = text.replace(entry, entry + '    "fscale_tui.cli.tui -> fscale_tui.engine.catalog.config",\n')
    config = tmp_path / "pyproject.toml"
    config.write_text(stale)
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())  # lint-imports wraps its lines
    assert "No matches for ignored import fscale_tui.cli.tui -> fscale_tui.engine.catalog.config" \
        in said


#: What a view may import from the engine: the facade and the base layer's public types.
VIEWS_MAY_IMPORT = {
    "fscale_tui.engine.session", "fscale_tui.engine.requests", "fscale_tui.engine.items",
    "fscale_tui.engine.strategies", "fscale_tui.engine.base",
    *(f"fscale_tui.engine.base.{m}" for m in ("budget", "calls", "errors", "events", "jsonl",
                                              "output", "paths", "redact", "settings", "spend",
                                              "storage")),
}


def _views_contract() -> dict:
    (contract,) = [c for c in _contracts() if c["name"].startswith("Views use only")]
    return contract


def test_the_views_rule_is_an_allowlist():
    """Every engine module is either allowed to the views or forbidden by the contract (a new
    engine module is forbidden until it is listed), and every import from a view into the engine
    is allowed or a listed deferred import."""
    import fnmatch

    contract = _views_contract()
    graph = _graph()
    engine = {m for m in graph.modules if m.startswith("fscale_tui.engine.")}

    def forbidden(m: str) -> bool:
        return any(m == f or m.startswith(f + ".") or fnmatch.fnmatch(m, f)
                   for f in contract["forbidden_modules"])

    assert {m for m in engine if not forbidden(m)} == VIEWS_MAY_IMPORT
    assert not VIEWS_MAY_IMPORT & {m for m in engine if forbidden(m)}
    ignored = {tuple(e.split(" -> ")) for e in contract["ignore_imports"]}
    past = set()
    for view in graph.modules:
        if (_layer_of(view) or (None,))[0] != 0:  # the top layer: the views
            continue
        for imported in graph.find_modules_directly_imported_by(view):
            if imported.startswith("fscale_tui.engine.") and imported not in VIEWS_MAY_IMPORT:
                past.add((view, imported))
    assert past == ignored
