"""Convert the shared MMLU-Pro replay set into a task file, a replay file and a config snippet.

    python -m fscale_tui.engine.routing.mmlu /work/shared/data/mmlu_pro_replay OUT_DIR \
        [--split 0.4,0.3,0.3 --seed 0] [--only-ids FILE] [--exclude-ids FILE]

Source (see its README): ``questions.jsonl`` (id, category, question, options, answer),
``answers.csv`` (id, then one column per model with the letter it answered; empty = no answer
could be extracted) and ``models.csv`` (model, usd_per_mtok, accuracy). Writes:

- ``tasks.jsonl``: one task per question: the question followed by its lettered options,
  ``answers`` = the letters offered (A… up to ten), ``label`` = the gold letter, ``category``;
  with ``--split``, also ``tasks.train.jsonl``, ``tasks.val.jsonl`` and ``tasks.test.jsonl``;
- ``replay.jsonl``: per model and question ``{"model", "id", "prompt_sha256", "reply"}``, the
  reply being ``"Answer: X"`` or ``""`` (a reply with no answer, as recorded);
- ``config.toml``: a ``[providers.mmlu]`` replay provider, the 14 models (alias, cost, tier,
  family from :func:`fscale_tui.engine.catalog.builtins.family_of`, the rule used for every model id)
  and panels ``cheap`` (3 cheapest-accurate) and ``strong`` (5 most accurate).
  Append it to your config.toml (``fscale config path``).

``--only-ids FILE`` keeps only the questions listed, ``--exclude-ids FILE`` drops them (e.g. the
ids already used for tuning); FILE holds one id per line, or is a JSONL file whose objects have
an ``id`` (a task file). Everything written (tasks, splits, replay lines, panels) covers the kept
questions only.

The panels are chosen by the accuracy measured on the recorded answers of the *calibration*
part only: with ``--split``, every part but the last (the held-out test part); without it, all
kept questions. The accuracy column of ``models.csv`` (computed over every question, test part
included) is not used, so nothing about the test part leaks into the configuration.
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

from ..base import output
from ..catalog.builtins import family_of
from ..base.errors import UsageError
from ..providers.replay import prompt_sha256
from .tasks import Task, write_tasks

LETTERS = "ABCDEFGHIJ"


@dataclass
class ReplaySet:
    tasks: list[Task]
    models: list[str]  # provider model ids (the source's column names)
    answers: dict[str, list[str | None]]  # model -> letter per task (None = no answer)
    costs: dict[str, float]
    accuracy: dict[str, float]


def alias_for(model: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")


def tier_for(cost: float) -> str:
    return "fast" if cost <= 0.2 else "medium" if cost <= 0.6 else "slow"


def question_text(question: str, options: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{LETTERS[i]}) {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def load_replay_set(src: Path) -> ReplaySet:
    from ..base.jsonl import read_jsonl

    questions = [obj for _, obj in read_jsonl(src / "questions.jsonl", "questions file")]
    with (src / "answers.csv").open(newline="", encoding="utf-8") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    with (src / "models.csv").open(newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    models = [m["model"] for m in meta]
    tasks: list[Task] = []
    answers: dict[str, list[str | None]] = {m: [] for m in models}
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


def read_ids(path: Path) -> set[str]:
    """Question ids from a file: one per line (``#`` comments allowed), or JSONL objects with ``id``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"id file {str(path)!r} cannot be read: {exc}") from None
    ids: set[str] = set()
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                ids.add(str(obj["id"]))
            except (ValueError, KeyError, TypeError):
                raise UsageError(f"id file {str(path)!r} line {lineno}: a JSON line needs an 'id'") from None
        else:
            ids.add(line)
    return ids


def select(rs: ReplaySet, only: set[str] | None = None, exclude: set[str] | None = None) -> ReplaySet:
    """The replay set restricted to the ids in ``only`` (if given) minus those in ``exclude``."""
    keep = [i for i, t in enumerate(rs.tasks)
            if (only is None or t.id in only) and (exclude is None or t.id not in exclude)]
    return ReplaySet([rs.tasks[i] for i in keep], rs.models,
                     {m: [a[i] for i in keep] for m, a in rs.answers.items()}, rs.costs, rs.accuracy)


def measured_accuracy(rs: ReplaySet, indices: list[int]) -> dict[str, float]:
    """Each model's accuracy on the given questions (no answer counts as wrong)."""
    n = max(1, len(indices))
    return {m: sum(rs.answers[m][i] == rs.tasks[i].label for i in indices) / n for m in rs.models}


def replay_lines(rs: ReplaySet) -> list[dict[str, Any]]:
    out = []
    for i, task in enumerate(rs.tasks):
        sha = prompt_sha256(task.messages())
        for m in rs.models:
            a = rs.answers[m][i]
            out.append({"model": m, "id": task.id, "prompt_sha256": sha,
                        "reply": f"Answer: {a}" if a else ""})
    return out


def config_snippet(rs: ReplaySet, replay_path: Path, provider: str = "mmlu",
                   accuracy: dict[str, float] | None = None) -> dict[str, Any]:
    """The config for the replay set; panels ranked by ``accuracy`` (the calibration part's)."""
    acc = accuracy if accuracy is not None else rs.accuracy
    by_acc = sorted(rs.models, key=lambda m: (-acc[m], m))
    cheap = sorted(rs.models, key=lambda m: (rs.costs[m], -acc[m], m))
    cheap = sorted(cheap[:6], key=lambda m: (-acc[m], m))[:3]
    return {
        "providers": {provider: {"type": "replay", "path": str(replay_path), "concurrency": 64}},
        "models": {alias_for(m): {"provider": provider, "id": m, "tier": tier_for(rs.costs[m]),
                                  "family": family_of(m), "cost": rs.costs[m]} for m in rs.models},
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


def convert(src: Path, out: Path, *, split: list[float] | None = None, seed: int = 0,
            only_ids: set[str] | None = None, exclude_ids: set[str] | None = None) -> dict[str, Any]:
    import tomli_w

    from ..base import storage

    rs = load_replay_set(src)
    known = {t.id for t in rs.tasks}
    if only_ids is not None or exclude_ids is not None:
        rs = select(rs, only_ids, exclude_ids)
    if not rs.tasks:
        raise UsageError("no question left after --only-ids/--exclude-ids")
    parts = split_indices(len(rs.tasks), split, seed) if split else [list(range(len(rs.tasks)))]
    # The panels see the calibration part only: every part but the held-out last one.
    calibration = sorted(i for part in (parts[:-1] if len(parts) > 1 else parts) for i in part)
    accuracy = measured_accuracy(rs, calibration)
    out.mkdir(parents=True, exist_ok=True)
    write_tasks(out / "tasks.jsonl", rs.tasks)
    lines = replay_lines(rs)
    storage.atomic_write_text(out / "replay.jsonl",
                              "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    snippet = config_snippet(rs, (out / "replay.jsonl").resolve(), accuracy=accuracy)
    storage.atomic_write_text(out / "config.toml", tomli_w.dumps(snippet))
    written: dict[str, Any] = {"tasks": len(rs.tasks), "replay_lines": len(lines),
                               "models": len(rs.models), "dir": str(out)}
    if only_ids is not None:
        written["only_ids_not_found"] = len(only_ids - known)
    if exclude_ids is not None:
        written["excluded"] = len(exclude_ids & known)
    if split:
        for name, idx in zip(("train", "val", "test"), parts):
            write_tasks(out / f"tasks.{name}.jsonl", [rs.tasks[i] for i in idx])
            written[name] = len(idx)
    written["panels"] = {**snippet["panels"], "chosen_on": len(calibration),
                         "accuracy": {alias_for(m): round(a, 4) for m, a in accuracy.items()}}
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fscale_tui.engine.routing.mmlu",
                                     description="Convert the MMLU-Pro replay set (see module docstring).")
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", help="train,val,test fractions, e.g. 0.4,0.3,0.3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only-ids", type=Path, help="keep only these question ids (one per line, or JSONL with 'id')")
    parser.add_argument("--exclude-ids", type=Path, help="drop these question ids (e.g. those used for tuning)")
    args = parser.parse_args(argv)
    split = [float(x) for x in args.split.split(",")] if args.split else None
    from ..base.errors import FscaleError

    try:
        written = convert(args.src, args.out, split=split, seed=args.seed,
                          only_ids=read_ids(args.only_ids) if args.only_ids else None,
                          exclude_ids=read_ids(args.exclude_ids) if args.exclude_ids else None)
    except FscaleError as exc:  # a bad input line: one line naming file:line, not a traceback
        output.err.write(f"mmlu: error: {exc}\n")
        return int(exc.exit_code)
    output.out.write(json.dumps(written) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
