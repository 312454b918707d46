"""One output boundary: nothing in the package writes around ``engine/output.py``.

Every byte fscale writes to stdout or stderr goes through ``engine.output.out``/``err`` (which
redact) or through a rich console built by ``cli.common.console`` (which redacts each string
before layout and writes through the same streams). This test reads the source of every module
and fails on anything that could print around them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from fscale_tui.engine.base import output
from fscale_tui.engine.base.redact import MASK, register_secrets

PACKAGE = Path(__file__).resolve().parent.parent / "fscale_tui"
#: The boundary itself, and the one console factory.
LAYER = {"engine/base/output.py"}
CONSOLE_FACTORY = {"cli/common.py"}
#: Reading these is fine: they say where output goes, they do not write.
HARMLESS_STD_ATTRS = {"isatty", "fileno"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "<expr>")  # e.g. console().print
    return ".".join(reversed(parts))


def offences(source: str, rel: str) -> list[str]:
    """Every way ``source`` could write around the boundary, as ``file:line: what``."""
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = []
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name == "print":
                found.append(f"{where}: print(")
            if name.split(".")[-1] in ("Console", "StreamHandler", "basicConfig") \
                    and rel not in CONSOLE_FACTORY:
                found.append(f"{where}: {name}(")
            if name in ("typer.echo", "click.echo", "rich.print", "rprint", "typer.secho",
                        "traceback.print_exc", "traceback.print_exception", "pprint.pprint"):
                found.append(f"{where}: {name}(")
            if name == "os.write" and node.args and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value in (1, 2):
                found.append(f"{where}: os.write to a standard stream")
        if isinstance(node, ast.Attribute) and _dotted(node) in (
                "sys.stdout", "sys.stderr", "sys.__stdout__", "sys.__stderr__"):
            parent = parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.attr in HARMLESS_STD_ATTRS
                    and not _dotted(node).startswith("sys.__")):
                found.append(f"{where}: {_dotted(node)} used other than .isatty()/.fileno()")
    return found


def test_nothing_in_the_package_writes_around_the_output_boundary():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in LAYER:
            continue
        found += offences(path.read_text(encoding="utf-8"), rel)
    assert not found, "write through fscale_tui.engine.base.output (out/err) or cli.common.console:\n" \
                      + "\n".join(found)


def test_the_scan_catches_each_way_around_the_boundary():
    """The scanner itself: each of these would print around the redactor."""
    cases = ["print('x')", "import sys\nsys.stdout.write('x')", "import sys\nsys.stderr.write('x')",
             "import sys\nout = sys.stdout", "import sys\nprint('x', file=sys.stderr)",
             "from rich.console import Console\nConsole()", "import typer\ntyper.echo('x')",
             "import os\nos.write(2, b'x')", "import traceback\ntraceback.print_exc()",
             "import logging\nlogging.basicConfig()", "import sys\nsys.__stderr__.write('x')",
             "import sys\nf(sys.stdout)"]
    for source in cases:
        assert offences(source, "cli/x.py"), source
    for source in ["import sys\nsys.stdout.isatty()", "import sys\nsys.stdin.read()",
                   "console.print('x')", "output.err.write('x')", "stderr_console().print('x')"]:
        assert not offences(source, "cli/x.py"), source


def test_the_boundary_streams_redact_every_write(capsys):
    secret = "Zq4Wm8Rt2Yp6Kx9Lv3Nb7Hc5Jd1Fg0Ts"
    register_secrets([secret])
    output.out.write(f"out {secret}\n")
    output.err.write(f"err {secret[:24]}…\n")
    captured = capsys.readouterr()
    assert captured.out == f"out {MASK}\n"
    assert captured.err == f"err {MASK}…\n"
