"""One JSONL reader everywhere: lines end at \\n only, and each bad line is an error of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fscale_tui.engine.base.errors import ConfigError, UsageError
from fscale_tui.engine.base.jsonl import JSONLError, iter_jsonl, read_jsonl
from fscale_tui.engine.providers.replay import ReplayIndex
from fscale_tui.engine.routing.mmlu import load_replay_set
from fscale_tui.engine.routing.mmlu import main as mmlu_main
from fscale_tui.engine.routing.tasks import load_tasks
from tests.conftest import Behaviour, run_cli

#: Legal inside a JSON string, and line breaks to str.splitlines().
SEPARATORS = ["\u0085", "\u2028", "\u2029", "\x0c", "\x1c"]


def _raw_jsonl(objs: list[dict]) -> bytes:
    # ensure_ascii=False keeps U+2028 etc. as raw characters in the file, as real data has them.
    return "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs).encode("utf-8")


def test_reader_splits_on_newline_only_and_isolates_bad_lines():
    data = (_raw_jsonl([{"q": f"a{s}b"} for s in SEPARATORS]) + b'{"q": "bad \xff byte"}\n'
            + b"not json\n" + b"\n" + b'{"q": "last"}\r\n')
    rows = list(iter_jsonl(data))
    assert [n for n, _ in rows] == [1, 2, 3, 4, 5, 6, 7, 9]
    assert [v["q"] for _, v in rows[:5]] == [f"a{s}b" for s in SEPARATORS]
    assert isinstance(rows[5][1], JSONLError) and "UTF-8" in str(rows[5][1])
    assert isinstance(rows[6][1], JSONLError) and "JSON" in str(rows[6][1])
    assert rows[7][1] == {"q": "last"}


def test_strict_reader_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n')
    with pytest.raises(UsageError, match=r"x\.jsonl:2: invalid JSON"):
        read_jsonl(path, "task file")


def _task(i: int, sep: str) -> dict:
    return {"id": f"t{i}", "question": f"Is{sep}this one question?", "answers": ["YES", "NO"],
            "label": "YES"}


def test_task_file_with_unicode_separators_reads_one_task_per_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(_raw_jsonl([_task(i, s) for i, s in enumerate(SEPARATORS)]))
    tasks = load_tasks(path)
    assert [t.id for t in tasks] == [f"t{i}" for i in range(len(SEPARATORS))]
    assert tasks[1].question == "Is\u2028this one question?"


def test_task_file_with_a_bad_byte_names_the_line(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(_raw_jsonl([_task(0, " ")]) + b'{"id": "t1", "question": "\xff"}\n')
    with pytest.raises(UsageError, match=r"tasks\.jsonl:2: not valid UTF-8"):
        load_tasks(path)


def test_replay_file_with_unicode_separators(tmp_path):
    path = tmp_path / "replay.jsonl"
    path.write_bytes(_raw_jsonl([{"model": "m", "id": f"q{i}", "reply": f"Answer:{s} YES"}
                                 for i, s in enumerate(SEPARATORS)]))
    index = ReplayIndex.load(path)
    assert len(index.by_id) == len(SEPARATORS)
    assert index.lookup("m", "q2", "") == (True, "Answer:\u2029 YES")
    path.write_bytes(path.read_bytes() + b'{"model": "m"\n')
    with pytest.raises(ConfigError, match=r"replay\.jsonl:6: invalid JSON"):
        ReplayIndex.load(path)


def _mmlu_source(src: Path, questions: list[dict]) -> None:
    src.mkdir()
    (src / "questions.jsonl").write_bytes(_raw_jsonl(questions))
    (src / "answers.csv").write_text("id,m1\n" + "".join(f"{q['id']},A\n" for q in questions))
    (src / "models.csv").write_text("model,usd_per_mtok,accuracy\nm1,0.1,0.5\n")


def test_mmlu_converter_reads_questions_with_nel(tmp_path):
    src = tmp_path / "src"
    _mmlu_source(src, [{"id": i, "category": "law", "question": f"Q{s}{i}", "options": ["x", "y"],
                        "answer": "A"} for i, s in enumerate(SEPARATORS)])
    rs = load_replay_set(src)
    assert len(rs.tasks) == len(SEPARATORS) and rs.tasks[0].question.startswith("Q\u0085")
    # A broken line is one line on stderr naming file:line and exit 2, not a traceback.
    (src / "questions.jsonl").write_bytes(b'{"id": 1, "question": \n')
    assert mmlu_main([str(src), str(tmp_path / "out")]) == 2


def test_batch_line_with_u2028_stays_one_item(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="YES"))
    items = tmp_path / "items.jsonl"
    items.write_bytes(_raw_jsonl([{"id": "a", "question": "first\u2028still first?"},
                                  {"id": "b", "question": "nel\u0085and\u2029para?"}])
                      + b'{"id": "c", "question": "bad \xff byte"}\n'
                      + _raw_jsonl([{"id": "d", "question": "last?"}]))
    proc = run_cli("scale", "--batch", str(items), "-a", "YES,NO", "-k", "1")
    lines = [json.loads(x) for x in proc.stdout.split("\n") if x]
    assert [(x["index"], x["item_id"]) for x in lines] == [(0, "a"), (1, "b"), (2, None), (3, "d")]
    assert [x["status"] for x in lines] == ["decided", "decided", "error", "decided"]
    assert "line 3" in lines[2]["error"] and "UTF-8" in lines[2]["error"]
    assert proc.returncode == 3
