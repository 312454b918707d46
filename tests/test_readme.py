"""Every shell example of the README and of the pages in docs/ runs, so the documentation
cannot drift from the CLI.

Each command line of each ```sh block of README.md, then of docs/*.md (in name order), is one
test (its id is the command as written; a docs page's commands are prefixed with the page),
run by ``bash -o pipefail`` the way a reader would type it: ``\\`` continuations joined, pipes,
redirects, ``cat file |`` and ``export`` lines included, in one working directory and one
``FSCALE_HOME`` shared by the whole documentation (a reader runs it top to bottom; a command
whose block has earlier commands runs those first, unchecked, when it is selected alone).
``fscale`` is this checkout's CLI.

The reader's environment: ``NVIDIA_API_KEY`` is set (a fake key) and config.toml points the
built-in ``nim`` and ``github`` providers, and the README's own ``mystub`` provider (models
``fast-a``, ``fast-b``, ``new-model``, panel ``strong``), at the loopback server, which answers
every model id: a classification prompt with its first label, a judge with "Best: Output 1", a
grader with "Score: 8", a free-form task with "The answer is: 391". The input files the
examples name (``x.py``, ``review.txt``, ``draft.md``, ``items.jsonl``, ``out/tasks.*.jsonl``…)
are created with small contents; the call the learning examples name
(``20261121-220843-024957a8``) is in the call log.

The remote examples run with ``FSCALE_LOCAL=off`` (so ``fscale health`` does not start the
local models). Blocks the documentation marks as local-model examples (the Set-up block "with no API key,
fscale votes with embedded local models", the ``### local`` section, and docs/local-models.md)
run with no key against the
real embedded local models (the ``[local]`` extra, which the README's test set-up installs);
without the extra they are skipped, saying so, like the examples that pipe through ``jq``
when it is not installed.

Expected exit code: 0, or also N when the example's comment says ``exit N`` (e.g. "exit 3 =
abstained"). Commands that install, run the whole test suite or run the benchmarks are not run
(:data:`NOT_RUN`, each with its reason; a rule that no longer matches a README command fails).

The README's "Install and test" lines are what ``.ci/run`` runs, no more and no less
(:func:`test_ci_runs_exactly_the_readme_install_and_test_lines`). The README is a guide of at
most :data:`README_MAX_LINES` lines whose every link to docs/ (and every link of a docs page)
leads somewhere, and every docs page is linked from it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from tests.cli_zygote import write_shim
from tests.conftest import (HERMETIC_UNSET, REPO, Behaviour, StubOpenAIServer, needs_jq,
                            needs_local_models, needs_matplotlib, the_zygote)

# One module fixture for the whole README, blocks run top to bottom: one xdist worker runs these,
# one after another; a group of their own, beside the serial group (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("readme")

README = REPO / "README.md"
#: The pages whose examples run, in the order a reader meets them: the README, then docs/.
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
#: The README is the guide; reference material lives in docs/ (issue 23).
README_MAX_LINES = 350
CALL_ID = "20261121-220843-024957a8"
FAKE_KEY = "nvapi-readme-test-not-a-key"

#: Commands the test does not run: (pattern matched against the command, reason).
NOT_RUN: list[tuple[str, str]] = [
    (r"^pip install\b", "installs the package: the test runs in the environment it produced"),
    (r"^python3 -m venv\b", "makes a virtualenv: the test runs in the environment it produced"),
    (r"^apt-get\b", "installs system packages (as root); the tests that need them skip without"),
    (r"^python -m pytest\b", "runs the whole test suite, this test included"),
    (r"^python -m mypy\b", "the type check: tests/test_typing.py runs it"),
    (r"(^|\s)python bench/", "a benchmark: minutes to hours; it prints figures, run it by hand"),
]


@dataclass(frozen=True)
class Example:
    command: str  # as written (continuations joined), comment included
    block: tuple[str, int]  # its page and the index of its ```sh block there
    local: bool  # the page says it runs on the embedded local models
    expected: frozenset[int]

    @property
    def id(self) -> str:
        page = self.block[0]
        return _strip_comment(self.command) if page == "README.md" \
            else f"{page}: {_strip_comment(self.command)}"


def _strip_comment(line: str) -> str:
    """The command without a trailing ``# comment`` (a ``#`` outside quotes after a space)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def parse_readme(text: str, page: str = "README.md") -> list[Example]:
    examples: list[Example] = []
    lines = text.splitlines()
    heading, paragraph, block, closed = "", "", -1, False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading, paragraph, closed = line, "", False
        elif not line.strip():
            closed = True  # the paragraph ended; it is still "the sentence before" a block
        elif line.startswith("```sh"):
            block += 1
            # "Where it says so": the section or the page is the local-model one, or the
            # sentence right before the block says the command votes with the embedded local
            # models.
            local = (heading.lower().startswith("### local") or page == "docs/local-models.md"
                     or "local models" in paragraph.lower())
            body: list[str] = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            pending = ""
            paragraph = ""
            for raw in body:
                if raw.rstrip().endswith("\\"):
                    pending += raw.rstrip()[:-1].rstrip() + " "
                    continue
                command = (pending + raw.strip()).strip() if pending else raw.strip()
                pending = ""
                if not command or command.startswith("#"):
                    continue
                extra = {int(n) for n in re.findall(r"\bexit (\d+)\b", command.partition(" #")[2])}
                examples.append(Example(command, (page, block), local, frozenset({0} | extra)))
        else:
            paragraph = (line if closed else paragraph + " " + line)
            closed = False
        i += 1
    return examples


def _not_run(command: str) -> str | None:
    for pattern, reason in NOT_RUN:
        if re.search(pattern, _strip_comment(command)):
            return reason
    return None


EXAMPLES = [e for page in PAGES for e in parse_readme(page.read_text(encoding="utf-8"),
                                                      page.relative_to(REPO).as_posix())]
RUN = [e for e in EXAMPLES if _not_run(e.command) is None]


def _marks(example: Example) -> list[pytest.MarkDecorator]:
    """What an example needs beyond [dev]: the local models, or jq for a pipe through it."""
    marks = [needs_local_models] if example.local else []
    if re.search(r"\|\s*jq\b", runnable(example.command)):
        marks.append(needs_jq)
    if "--png" in runnable(example.command):
        marks.append(needs_matplotlib)
    return marks


def runnable(command: str) -> str:
    """What bash runs: the command without its comment, optional ``[...]`` parts dropped
    (``fscale local status [--json]`` is run as ``fscale local status``)."""
    cmd = _strip_comment(command)
    return re.sub(r"\s\[(?:-|[A-Z])[^\]'\"]*\]", "", cmd)


# -- the reader's files ----------------------------------------------------------------------------
def _tasks(split: str, n: int = 24) -> str:
    topics = ["prime numbers", "photosynthesis", "the French revolution", "sorting algorithms",
              "supply and demand", "plate tectonics", "Shakespeare's sonnets", "vaccines",
              "binary search trees", "the Roman empire", "compound interest", "black holes"]
    rows = [{"id": f"{split}{i}", "question": f"Question {i} about {topics[i % len(topics)]}: "
             f"which option is right ({split})?", "answers": ["A", "B", "C", "D"],
             "label": "ABCD"[i % 4], "category": topics[i % len(topics)]} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in rows)


FILES = {
    "x.py": "import os\nos.system(input())\n",
    "app.py": "from flask import request\n\ndef run():\n    eval(request.args['q'])\n",
    "review.txt": "A warm, funny and beautifully acted film.\n",
    "draft.md": "The paper reports a 12% gain on GSM8K and was published in 2021.\n",
    "paper.txt": "We report a 12% gain on GSM8K. The paper appeared in 2023.\n",
    "spec.md": "Output: a JSON object with fields id and answer.\n",
    "notes.md": "Met with the team. Agreed to ship on Friday. Alice writes the docs.\n",
    "items.jsonl": "".join(json.dumps(r) + "\n" for r in [
        {"id": "q1", "question": "What is 17*23?", "gold": "391"},
        {"id": "q2", "question": "What is 20*20 - 9?", "gold": "391"}]),
    "out/tasks.train.jsonl": _tasks("train"),
    "out/tasks.val.jsonl": _tasks("val"),
    "out/tasks.test.jsonl": _tasks("test"),
}


def reply(body: dict) -> str:
    """One scripted reader-independent model: whatever prompt the CLI sends, a valid reply."""
    messages = body.get("messages") or []
    text = "\n".join(str(m.get("content") or "") for m in messages)
    last = str(messages[-1].get("content") or "") if messages else ""
    if m := re.search(r"'Best: (\w+) N'", text):
        return f"The first one is the most complete.\nBest: {m.group(1)} 1"
    if "most consistent response" in last:
        return "The most consistent response is Response 1"
    if "'Score: N'" in text:
        return "Correct and complete.\nScore: 8"
    if "Answer Yes or No" in last:
        return "Yes"
    if m := re.search(r"Answer with one of: (.+?)\.\s*$", last):
        return f"Answer: {m.group(1).split(', ')[0]}"
    return "17 * 23 = 340 + 51 = 391.\n\nThe answer is: 391"


@dataclass
class Reader:
    server: StubOpenAIServer
    workdir: Path
    env: dict[str, str]
    local_env: dict[str, str]
    done: set[int]


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("readme")
    home, workdir, bindir = root / "home", root / "work", root / "bin"
    for d in (home, workdir, bindir):
        d.mkdir()
    for name, content in FILES.items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(content)
    # `fscale` is this checkout's CLI, whatever is installed, forked from the worker's preloaded
    # fscale (tests/cli_zygote.py) when the example's environment allows it.
    write_shim(str(bindir / "fscale"))
    zygote = the_zygote()
    # The local examples find the weights joined (the run's one copy, linked in by the test
    # below): joining them on a first call is tested in tests/test_local_servers.py.
    with StubOpenAIServer() as server:
        server.set_default(Behaviour(reply_fn=reply))
        config = {
            "providers": {"nim": {"base_url": server.base_url, "rpm": 100000},
                          "github": {"base_url": server.base_url, "rpm": 100000},
                          "mystub": {"base_url": server.base_url}},
            "models": {
                "fast-a": {"provider": "mystub", "id": "vendor/model-a", "tier": "fast",
                           "family": "vendor-a", "cost": 0.2},
                "fast-b": {"provider": "mystub", "id": "vendor/model-b", "tier": "fast",
                           "family": "vendor-b", "cost": 0.2},
                "new-model": {"provider": "mystub", "id": "vendor/new-model", "tier": "fast",
                              "family": "vendor-n", "cost": 0.1},
            },
            "panels": {"strong": ["llama-3.3-70b", "gemma-3-27b", "qwen2.5-coder-32b"]},
        }
        (home / "config.toml").write_text(tomli_w.dumps(config))
        base = {k: v for k, v in os.environ.items() if k not in HERMETIC_UNSET}
        base.update(FSCALE_HOME=str(home), PYTHONPATH=str(REPO), EDITOR="true", NO_COLOR="1",
                    PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
                    FSCALE_RETRY_BASE="0.01")
        if zygote is not None:
            base["FSCALE_TEST_ZYGOTE"] = zygote.path
        base.pop("FSCALE_LOCAL", None)
        # The remote examples leave the embedded local models out (FSCALE_LOCAL=off): `fscale
        # health` would otherwise start them too; the local examples have them.
        env = {**base, "NVIDIA_API_KEY": FAKE_KEY, "FSCALE_LOCAL": "off"}
        local_env = {**base, "FSCALE_LOCAL_N_CTX": "1024", "FSCALE_LOCAL_PARALLEL": "1"}
        # `fscale models refresh` asks /v1/models: the loopback lists every configured id.
        listing = subprocess.run([sys.executable, "-m", "fscale_tui", "models", "--json"],
                                 env=env, capture_output=True, text=True, cwd=workdir, timeout=60,
                                 check=False)
        assert listing.returncode == 0, listing.stderr
        server.set_models(sorted({m["id"] for m in json.loads(listing.stdout)}))
        _seed_call_log(home, env)
        try:
            yield Reader(server, workdir, env, local_env, set())
        finally:
            subprocess.run([sys.executable, "-m", "fscale_tui", "local", "stop"], env=local_env,
                           capture_output=True, cwd=workdir, timeout=60, check=False)


def _seed_call_log(home: Path, env: dict[str, str]) -> None:
    """The call the learning examples name, logged as a scale call of fast-a, fast-b and a nim
    model (so `--prefer fast-a --over fast-b` has both repliers)."""
    code = (
        "from fscale_tui.engine.learning.store import CallRecord, LearningStore, ReplyRecord\n"
        "import sys\n"
        "with LearningStore(sys.argv[1]) as s:\n"
        f"    s.record_call(CallRecord(id={CALL_ID!r}, question='Is this code safe?',\n"
        "        labels=['SAFE', 'VULNERABLE'], members=['fast-a', 'fast-b', 'llama-3.1-8b'],\n"
        "        answer='SAFE', replies=[ReplyRecord('fast-a', answer='SAFE', raw='Answer: SAFE'),\n"
        "        ReplyRecord('fast-b', answer='VULNERABLE', raw='Answer: VULNERABLE'),\n"
        "        ReplyRecord('llama-3.1-8b', answer='SAFE', raw='Answer: SAFE')]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(home / "data" / "learning.db")],
                          env=env, capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def _run(reader: Reader, example: Example) -> subprocess.CompletedProcess:
    env = reader.local_env if example.local else reader.env
    return subprocess.run(["bash", "-o", "pipefail", "-c", runnable(example.command)],
                          cwd=reader.workdir, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300 if example.local else 120,
                          check=False)


# -- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("example", [pytest.param(e, marks=_marks(e), id=e.id) for e in RUN])
def test_readme_example(reader: Reader, example: Example, request: pytest.FixtureRequest) -> None:
    cache = Path(reader.env["FSCALE_HOME"]) / "cache"
    if example.local and not any((cache / "local").glob("*.gguf")):
        from tests.conftest import link_joined_weights

        link_joined_weights(request.getfixturevalue("joined_weights"), cache)
    # A reader runs a block top to bottom: earlier commands of the block run first.
    for earlier in RUN:
        if earlier.block == example.block and earlier is not example \
                and RUN.index(earlier) < RUN.index(example) and RUN.index(earlier) not in reader.done:
            _run(reader, earlier)
            reader.done.add(RUN.index(earlier))
    proc = _run(reader, example)
    reader.done.add(RUN.index(example))
    assert proc.returncode in example.expected, (
        f"README example exited {proc.returncode} (expected {sorted(example.expected)}):\n"
        f"$ {runnable(example.command)}\n--- stdout\n{proc.stdout[-2000:]}\n"
        f"--- stderr\n{proc.stderr[-2000:]}")
    if example.local and runnable(example.command).startswith("fscale scale"):
        # It really voted with the embedded local models (not the loopback server).
        last = subprocess.run([sys.executable, "-m", "fscale_tui", "history", "-n", "1", "--json"],
                              env=reader.local_env, capture_output=True, text=True, timeout=60,
                              check=False)
        members = json.loads(last.stdout)[0]["members"]
        assert members and all(m.startswith("local-") for m in members), members


def test_the_readme_has_examples_and_every_skip_rule_is_still_needed() -> None:
    readme = [e for e in RUN if e.block[0] == "README.md"]
    assert len(readme) >= 25 and any(e.local for e in readme)
    assert len(RUN) >= 60 and {e.block[0] for e in RUN} > {"README.md"}
    for pattern, _ in NOT_RUN:
        assert any(re.search(pattern, _strip_comment(e.command)) for e in EXAMPLES), \
            f"NOT_RUN rule {pattern!r} matches no documented command: remove it"


def test_the_parser_joins_continuations_and_reads_expected_exit_codes() -> None:
    text = ("## X\n\nWith no key it votes with the embedded local models:\n\n```sh\n"
            "fscale scale \"q\" \\\n    -a A,B   # exit 3 = no decision\n# a comment\n"
            "cat f | fscale verify --source p.txt\n```\n\n### other\n\n```sh\n"
            "fscale local status [--json]    # x\n```\n")
    first, second, third = parse_readme(text)
    assert first.command.startswith('fscale scale "q" -a A,B') and first.local
    assert first.expected == {0, 3} and first.id == 'fscale scale "q" -a A,B'
    assert second.command == "cat f | fscale verify --source p.txt" and second.expected == {0}
    assert first.block == second.block == ("README.md", 0) and third.block == ("README.md", 1)
    assert not third.local and runnable(third.command) == "fscale local status"
    on_a_page = parse_readme(text.replace("### other", "### status"), "docs/local-models.md")
    assert on_a_page[2].local and on_a_page[2].id == "docs/local-models.md: fscale local status [--json]"


# -- the README is a guide; the reference is in docs/ ------------------------------------------
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def broken_links(page: Path) -> list[str]:
    """The relative links and images of a page whose file (or heading) does not exist."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:: not ours to check
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    return broken


def test_the_readme_is_a_short_guide() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move reference material "
        "(figures, field lists, theory) to a page in docs/ and link it")


def test_every_link_of_the_readme_and_the_docs_pages_leads_somewhere() -> None:
    for page in PAGES:
        assert not broken_links(page), f"{page.relative_to(REPO)}: {broken_links(page)}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {t.partition("#")[0] for t in LINK.findall(README.read_text(encoding="utf-8"))}
    pages = {p.relative_to(REPO).as_posix() for p in PAGES[1:]}
    assert pages and pages <= linked, f"not linked from README.md: {sorted(pages - linked)}"


def test_the_link_check_finds_a_missing_page_and_a_missing_heading(tmp_path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "there.md").write_text("# There\n\n## A `-k auto` section — ok\n")
    page = tmp_path / "README.md"
    page.write_text("[a](docs/there.md#a--k-auto-section--ok) [b](docs/gone.md) "
                    "[c](docs/there.md#nowhere) [d](https://example.com/x.md)\n"
                    "```sh\n[e](docs/in-code.md)\n```\n")
    assert broken_links(page) == ["docs/gone.md", "docs/there.md#nowhere"]


# -- the README's test set-up is what CI runs --------------------------------------------------
def install_and_test_block(text: str) -> list[str]:
    """The commands of the ```sh block that follows the README's "Install and test" line."""
    start = text.index("\nInstall and test")
    fence = text.index("```sh\n", start) + len("```sh\n")
    body = text[fence:text.index("```", fence)]
    return [_strip_comment(line.strip()) for line in body.splitlines()
            if line.strip() and not line.strip().startswith("#")]


#: .ci/run's lines that only set the stage (strict mode, the checkout, a fresh virtualenv) or
#: guard the optional system packages: everything else it runs must be a README line.
CI_SCAFFOLDING = re.compile(r"^(#|set -|cd |python3 -m venv |\. |if |then$|fi$|else$)")


def ci_commands(text: str) -> list[str]:
    return [_strip_comment(line.strip()) for line in text.splitlines()
            if line.strip() and not CI_SCAFFOLDING.match(line.strip())]


#: The install line of "Install and test".
INSTALL = "pip install -e "


def test_ci_runs_exactly_the_readme_install_and_test_lines() -> None:
    readme = install_and_test_block(README.read_text(encoding="utf-8"))
    assert readme and readme[-1] == "python -m pytest -q"
    assert any(line.startswith(INSTALL) for line in readme)
    assert ci_commands((REPO / ".ci" / "run").read_text(encoding="utf-8")) == \
        [line for line in readme if not CI_SCAFFOLDING.match(line)]


def test_ci_makes_its_virtualenv_as_the_readme_does() -> None:
    """The README's virtualenv line and .ci/run's take the same options (``--upgrade-deps``: a
    recent pip, which resolves the extras in half the time of the one venv bundles)."""
    def options(lines: list[str]) -> list[str]:
        line = next(x for x in lines if x.startswith("python3 -m venv "))
        return [word for word in line.split("&&")[0].split()[3:] if word.startswith("-")]

    readme = install_and_test_block(README.read_text(encoding="utf-8"))
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert options(readme) == options(ci) == ["--upgrade-deps"]


def test_the_readme_installs_every_extra_the_suite_uses() -> None:
    """The install line has every optional extra of pyproject.toml (the suite uses them all;
    without one, its tests skip)."""
    import tomllib

    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    line = next(x for x in install_and_test_block(README.read_text(encoding="utf-8"))
                if x.startswith(INSTALL))
    named = set(re.search(r"\.\[([^\]]+)\]", line).group(1).split(","))
    assert named == extras, f"README installs {sorted(named)}, pyproject has {sorted(extras)}"
