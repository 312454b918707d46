"""``fscale generate`` as a script author uses it: stdout is data, pipelines work, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, Behaviour, mid, run_cli


@pytest.fixture(autouse=True)
def _no_local_models(monkeypatch):
    monkeypatch.setenv("FSCALE_LOCAL", "off")


def _script_judge_case(server) -> None:
    server.script(mid("fast-a"), Behaviour(reply="Draft A. The answer is: 3"))
    server.script(mid("fast-b"), Behaviour(reply="Draft B is the one. The answer is: 4"))
    server.script(mid("slow-c"), Behaviour(reply="Draft C. The answer is: 5"))

    def judge(body):
        content = body["messages"][-1]["content"]
        blocks = content.split("Output ")
        for part in blocks[1:]:
            if "Draft B" in part:
                return f"Output 1 is worse, Output {part.split(':')[0]} is best"
        return "no idea"
    server.set_default(Behaviour(reply_fn=judge))


def test_generate_json_contract(server, stub_config):
    _script_judge_case(server)
    proc = run_cli("generate", "Pick a draft", "-k", "3", "--seed", "1", "--json", "--gold", "4")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert out["output"] == "Draft B is the one. The answer is: 4"
    assert out["winner_model"] == "fast-b" and out["strategy"] == "judge"
    assert len(out["all_outputs"]) == 3 and out["judge_votes"]
    assert out["total_calls"] == server.count()
    assert out["coverage"] is True and out["correct"] is True
    for key in ("elapsed_s", "answer", "counts", "selected_by", "judges", "generators", "status"):
        assert key in out


def test_plain_output_on_stdout_and_candidates_and_votes_on_stderr(server, stub_config):
    _script_judge_case(server)
    proc = run_cli("generate", "Pick a draft", "-k", "3", "--seed", "2", env={"NO_COLOR": "1"})
    assert proc.returncode == 0
    assert proc.stdout == "Draft B is the one. The answer is: 4\n"
    assert "fast-a" in proc.stderr and "→" in proc.stderr and "calls" in proc.stderr


def test_verify_and_generate_in_a_shell_pipeline(server, stub_config, tmp_path):
    """`cat draft | fscale verify …` and `fscale generate … --json | jq .output` work."""
    _script_judge_case(server)
    server.script(mid("fast-d"), Behaviour(reply="NO"))
    src = tmp_path / "source.txt"
    src.write_text("The sky is blue.")
    draft = tmp_path / "draft.txt"
    draft.write_text("The sky is blue.")
    fscale = f"{sys.executable} -m fscale_tui"
    verify = subprocess.run(f"cat {draft} | {fscale} verify --source {src} -m fast-d -q",
                            shell=True, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert verify.returncode == 0 and verify.stdout.strip() == "NO"
    reader = f"{sys.executable} -c \"import json,sys; print(json.load(sys.stdin)['output'])\""
    gen = subprocess.run(f"{fscale} generate 'Pick a draft' -k 3 --seed 3 --json | {reader}",
                         shell=True, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout == "Draft B is the one. The answer is: 4\n"
    if shutil.which("jq"):
        jq = subprocess.run(f"{fscale} generate 'Pick a draft' -k 3 --json | jq -r .output",
                            shell=True, capture_output=True, text=True, cwd=REPO, timeout=60)
        assert jq.stdout == "Draft B is the one. The answer is: 4\n"


def test_context_from_piped_stdin_goes_to_every_generator(server, stub_config):
    server.set_default(Behaviour(reply="The answer is: 1"))
    proc = run_cli("generate", "Summarise", "-s", "vote", "-k", "2", "-q", input="PIPED-CONTEXT-MARK")
    assert proc.returncode == 0
    systems = [r.body["messages"][0]["content"] for r in server.requests]
    assert len(systems) == 2 and all("PIPED-CONTEXT-MARK" in s for s in systems)


def test_batch_one_json_per_line_in_order_and_bad_lines_isolated(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="The answer is: 12"))
    items = tmp_path / "items.jsonl"
    items.write_text('{"question": "a", "gold": "12", "id": "x1"}\nnot json\n'
                     '{"question": "c", "strategy": "nope"}\n{"question": "d", "gold": "13"}\n')
    proc = run_cli("generate", "--batch", str(items), "-s", "vote", "-k", "2")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["index"] for x in lines] == [0, 1, 2, 3]
    assert lines[0]["item_id"] == "x1" and lines[0]["id"] != "x1" and lines[0]["correct"] is True
    assert lines[1]["status"] == lines[2]["status"] == "error"
    assert lines[3]["correct"] is False and lines[3]["coverage"] is False
    assert proc.returncode == 3  # not every item decided


@pytest.mark.parametrize("args, needle", [
    (["generate", "q", "-s", "bogus"], "--strategy"),
    (["generate"], "missing QUESTION"),
    (["generate", "q", "-m", "nope"], "unknown model"),
    (["generate", "q", "-k", "0"], "at least 1"),
])
def test_usage_errors_exit_2_with_one_line(server, stub_config, args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2 and needle in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_every_generator_failing_exits_4_and_json_still_printed(server, stub_config):
    server.set_default(Behaviour(status=500))
    proc = run_cli("generate", "q", "-k", "2", "--json", env={"FSCALE_RETRIES": "0"})
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["status"] == "all_failed"


def test_no_valid_judge_vote_exits_3(server, stub_config):
    server.set_default(Behaviour(reply="hmm"))
    proc = run_cli("generate", "q", "-k", "3", "--json")
    assert proc.returncode == 3 and json.loads(proc.stdout)["status"] == "no_votes"


def test_help_has_an_example_and_generate_does_not_import_textual():
    proc = run_cli("generate", "--help")
    assert proc.returncode == 0 and "Example" in proc.stdout
    code = ("import sys\nfrom fscale_tui.cli import app\n"
            "try:\n    app(args=['generate', '--help'])\nexcept SystemExit:\n    pass\n"
            "import fscale_tui.engine.strategies.generate\n"
            "print('TEXTUAL' if any(m == 'textual' or m.startswith('textual.') "
            "for m in sys.modules) else 'CLEAN')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN"


def test_engine_generate_imports_neither_typer_nor_textual():
    code = ("import sys, fscale_tui.engine.strategies.generate\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'textual')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# -- generate's answer (issue 12 item 9) -----------------------------------------------------------
@pytest.mark.parametrize("question, reply, expected", [
    ("Write a regex for ISO dates", "^\\d{4}-\\d{2}-\\d{2}$ matches 2024-01-02", None),
    ("Summarise the notes", "The team met on 3 May, agreed on 2 goals and meets again in 2 weeks.", None),
    ("What is 17*23?", "17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391", "391"),
])
def test_generate_reports_an_answer_only_when_the_task_asked_for_one(server, stub_config, question,
                                                                    reply, expected):
    """A regex or a summary used to get `"answer": "2"` (a number pulled out of free text)."""
    server.set_default(Behaviour(reply="Output 1 is best"))
    for alias in ("fast-a", "fast-b", "slow-c"):
        server.script(mid(alias), Behaviour(reply=reply))
    proc = run_cli("generate", question, "-k", "3", "--seed", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["answer"] == expected
    assert [c["answer"] for c in out["all_outputs"]] == [expected] * 3


def _one_family(fscale_home, server) -> None:
    """Two models of one family: the judges can only be the generators themselves."""
    from tests.conftest import write_config

    write_config(fscale_home, server, models={"only-a": ("x/a", "fast", "x"),
                                              "only-b": ("x/b", "fast", "x")},
                 panels={"default": ["only-a", "only-b"]})
    server.script("x/a", Behaviour(reply="The answer is: 3"))
    server.script("x/b", Behaviour(reply="The answer is: 3"))


def test_judges_of_the_generators_family_are_said_on_stderr_and_in_json(server, fscale_home):
    _one_family(fscale_home, server)
    proc = run_cli("generate", "Pick one", "-k", "2", "--seed", "1", env={"NO_COLOR": "1"})
    assert proc.returncode in (0, 3), proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "judges are not independent" in line]
    assert len(notes) == 1 and "no judge of another family" in notes[0]
    assert "only-a (a generator itself)" in notes[0]
    proc = run_cli("generate", "Pick one", "-k", "2", "--seed", "1", "--json")
    out = json.loads(proc.stdout)
    assert out["judges_independent"] is False
    assert proc.stderr == ""  # --json into a pipe: said in the JSON, stderr stays empty
    quiet = run_cli("generate", "Pick one", "-k", "2", "--json", "--quiet")
    assert "not independent" not in quiet.stderr


def test_judges_of_other_families_get_no_note_and_a_shared_family_does(server, stub_config):
    _script_judge_case(server)
    # Families a, b, c generate; d and e judge (a third judge would have to be of family a).
    proc = run_cli("generate", "Pick a draft", "-k", "3", "--judges", "2", "--seed", "1",
                   env={"NO_COLOR": "1"})
    assert "judges fast-d, think-e" in proc.stderr or "judges think-e, fast-d" in proc.stderr
    assert "not independent" not in proc.stderr
    proc = run_cli("generate", "Pick a draft", "-k", "3", "--judges", "2", "--seed", "1", "--json")
    assert json.loads(proc.stdout)["judges_independent"] is True
    assert "not independent" not in proc.stderr
    # Three judges: the third is of a generator's family (fast-a2, family a), and it is said.
    proc = run_cli("generate", "Pick a draft", "-k", "3", "--seed", "1", env={"NO_COLOR": "1"})
    assert "fast-a2 shares a family with a generator" in proc.stderr
