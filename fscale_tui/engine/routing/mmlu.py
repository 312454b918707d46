"""Convert the shared MMLU-Pro replay set into a task file, a replay file and a config snippet.

    python -m fscale_tui.engine.routing.mmlu /work/shared/data/mmlu_pro_replay OUT_DIR \
        [--split 0.4,0.3,0.3 --seed 0]

Source (see its README): ``questions.jsonl`` (id, category, question, options, answer),
``answers.csv`` (id, then one column per model with the letter it answered; empty = no answer
could be extracted) and ``models.csv`` (model, usd_per_mtok, accuracy). Writes:

- ``tasks.jsonl``: one task per question: the question followed by its lettered options,
  ``answers`` = the letters offered (A… up to ten), ``label`` = the gold letter, ``category``;
  with ``--split``, also ``tasks.train.jsonl``, ``tasks.val.jsonl`` and ``tasks.test.jsonl``;
- ``replay.jsonl``: per model and question ``{"model", "id", "prompt_sha256", "reply"}``, the
  reply being ``"Answer: X"`` or ``""`` (a reply with no answer, as recorded);
- ``config.toml``: a ``[providers.mmlu]`` replay provider, the 14 models (alias, cost, tier,
  family) and panels ``cheap`` (3 cheapest-accurate) and ``strong`` (5 most accurate).
  Append it to your config.toml (``fscale config path``).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..providers.replay import prompt_sha256
from .tasks import Task, write_tasks

LETTERS = "ABCDEFGHIJ"
FAMILIES = ("gemini", "gemma", "llama", "mistral", "mixtral", "mathstral", "qwen", "phi", "yi")


@dataclass
class ReplaySet:
    tasks: list[Task]
    models: list[str]  # provider model ids (the source's column names)
    answers: dict[str, list[str | None]]  # model -> letter per task (None = no answer)
    costs: dict[str, float]
    accuracy: dict[str, float]


def alias_for(model: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


def family_for(model: str) -> str:
    low = model.lower()
    for fam in FAMILIES:
        if low.startswith(fam) or f"-{fam}" in low or low.startswith(f"meta-{fam}"):
            return "mistral" if fam in ("mixtral", "mathstral") else fam
    return low.split("-")[0]


def tier_for(cost: float) -> str:
    return "fast" if cost <= 0.2 else "medium" if cost <= 0.6 else "slow"


def question_text(question: str, options: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{LETTERS[i]}) {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def load_replay_set(src: Path) -> ReplaySet:
    from ..jsonl import read_jsonl

    questions = [obj for _, obj in read_jsonl(src / "questions.jsonl", "questions file")]
    with (src / "answers.csv").open(newline="", encoding="utf-8") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    with (src / "models.csv").open(newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    models = [m["model"] for m in meta]
    tasks, answers = [], {m: [] for m in models}
    for q in questions:
        qid = str(q["id"])
        letters = tuple(LETTERS[: len(q["options"])])
        tasks.append(Task(id=qid, question=question_text(q["question"], q["options"]), answers=letters,
                          label=q["answer"], category=q.get("category")))
        row = rows[qid]
        for m in models:
            a = (row.get(m) or "").strip()
            answers[m].append(a if a else None)
    return ReplaySet(tasks, models, answers, {m["model"]: float(m["usd_per_mtok"]) for m in meta},
                     {m["model"]: float(m["accuracy"]) for m in meta})


def replay_lines(rs: ReplaySet) -> list[dict[str, Any]]:
    out = []
    for i, task in enumerate(rs.tasks):
        sha = prompt_sha256(task.messages())
        for m in rs.models:
            a = rs.answers[m][i]
            out.append({"model": m, "id": task.id, "prompt_sha256": sha,
                        "reply": f"Answer: {a}" if a else ""})
    return out


def config_snippet(rs: ReplaySet, replay_path: Path, provider: str = "mmlu") -> dict[str, Any]:
    by_acc = sorted(rs.models, key=lambda m: -rs.accuracy[m])
    cheap = sorted(rs.models, key=lambda m: (rs.costs[m], -rs.accuracy[m]))
    cheap = sorted(cheap[:6], key=lambda m: -rs.accuracy[m])[:3]
    return {
        "providers": {provider: {"type": "replay", "path": str(replay_path), "concurrency": 64}},
        "models": {alias_for(m): {"provider": provider, "id": m, "tier": tier_for(rs.costs[m]),
                                  "family": family_for(m), "cost": rs.costs[m]} for m in rs.models},
        "panels": {"cheap": [alias_for(m) for m in cheap], "strong": [alias_for(m) for m in by_acc[:5]]},
    }


def split_indices(n: int, fractions: list[float], seed: int) -> list[list[int]]:
    import numpy as np

    perm = np.random.default_rng(seed).permutation(n)
    total = sum(fractions)
    cuts, acc = [], 0.0
    for f in fractions[:-1]:
        acc += f / total
        cuts.append(int(round(acc * n)))
    return [sorted(int(i) for i in part) for part in np.split(perm, cuts)]


def convert(src: Path, out: Path, *, split: list[float] | None = None, seed: int = 0) -> dict[str, Any]:
    import tomli_w

    from .. import storage

    rs = load_replay_set(src)
    out.mkdir(parents=True, exist_ok=True)
    write_tasks(out / "tasks.jsonl", rs.tasks)
    lines = replay_lines(rs)
    storage.atomic_write_text(out / "replay.jsonl",
                              "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    storage.atomic_write_text(out / "config.toml",
                              tomli_w.dumps(config_snippet(rs, (out / "replay.jsonl").resolve())))
    written = {"tasks": len(rs.tasks), "replay_lines": len(lines), "models": len(rs.models),
               "dir": str(out)}
    if split:
        for name, idx in zip(("train", "val", "test"), split_indices(len(rs.tasks), split, seed)):
            write_tasks(out / f"tasks.{name}.jsonl", [rs.tasks[i] for i in idx])
            written[name] = len(idx)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fscale_tui.engine.routing.mmlu",
                                     description="Convert the MMLU-Pro replay set (see module docstring).")
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", help="train,val,test fractions, e.g. 0.4,0.3,0.3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    split = [float(x) for x in args.split.split(",")] if args.split else None
    from ..errors import FscaleError

    try:
        print(json.dumps(convert(args.src, args.out, split=split, seed=args.seed)))
    except FscaleError as exc:  # a bad input line: one line naming file:line, not a traceback
        print(f"mmlu: error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
