"""Learning backtest: does the evolving panel find the best panel without labels?

Replays the MMLU-Pro replay set (real A–J answers of 14 public LLMs to 5,943 questions; see
``../shared/data/mmlu_pro_replay/README.md``) as a stream of scale calls through fscale's own
learning code, in process, at zero cost:

* a temporary FSCALE_HOME (``<out>/home-<seed>``) whose config.toml declares the 14 models
  (families from ``catalogue.family_of``, the rule the converter and the catalogue use) and the
  starting panel as ``[panels] default``;
* each call: the panel comes from ``Registry(load_settings()).panel("default")`` (what ``scale``
  uses); the shadow challenger is drawn by the engine's own rule (``challenger.eligible`` +
  ``thompson_pick`` over the stored ratings); members "arrive" in a random order and the
  engine's early-decision rule (``vote.can_decide_early``) cancels the rest, as live; the
  decision is made by ``VoteRunner._finish`` with ``--tie-break rating`` (stored ratings);
  the result goes to the engine's observer (``CallRecorder``: call log + Elo update in SQLite);
* every ``--evolve-every`` calls (500): ``propose_panel`` + ``apply_panel`` exactly as
  ``fscale evolve --apply`` does, writing config.toml; the next call reloads the settings.

No label is used for learning unless ``--feedback-rate`` > 0, which simulates a user confirming
(or overriding with the gold letter) that fraction of calls, chosen at random.

The stream is the question file shuffled with ``--seed`` (the file is sorted by category, which
would make "the last 1,000 calls" a different task). Accuracy counts a no-decision as wrong.

The hindsight baseline scores every fixed 3-model panel on the whole stream at once with numpy
(:func:`hindsight_correct`: the same majority rule, ties to the first listed backer).

Everything goes to ``--out DIR`` (default: a new temporary directory, printed at the end; never
inside the repository): the FSCALE_HOME of each run, ``learning.png`` and ``learning.json``.

    python bench/learning.py --data /work/shared/data/mmlu_pro_replay     # seed 0, no feedback
    python bench/learning.py --seeds 0,1,2,3,4 --feedback-rate 0.02 --png docs/learning-backtest.png
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mmlu_pro_replay"


def load_data(data: Path):
    gold, options = {}, {}
    from fscale_tui.engine.jsonl import read_jsonl

    for _, q in read_jsonl(data / "questions.jsonl", "questions file"):
        gold[q["id"]] = q["answer"]
        options[q["id"]] = len(q["options"])
    with open(data / "answers.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    models = [c for c in rows[0] if c != "id"]
    with open(data / "models.csv", encoding="utf-8", newline="") as fh:
        listed = {r["model"]: (float(r["accuracy"]), float(r["usd_per_mtok"])) for r in csv.DictReader(fh)}
    return gold, options, rows, models, listed


def panel_decision(row: dict, panel: list[str]) -> str | None:
    """Majority of the panel; a tie goes to the first listed backer (panel order)."""
    votes = [row[m] for m in panel if row[m]]
    if not votes:
        return None
    counts = Counter(votes)
    top = max(counts.values())
    tied = {a for a, c in counts.items() if c == top}
    return next(row[m] for m in panel if row[m] in tied)


def fixed_panel_accuracy(rows, gold, panel, order_key) -> list[bool]:
    ordered = sorted(panel, key=order_key)
    return [panel_decision(r, ordered) == gold[r["id"]] for r in rows]


def hindsight_correct(rows: list[dict], gold: dict, panels: list[list[str]], chunk: int = 256) -> np.ndarray:
    """``fixed_panel_accuracy`` for many panels at once: a (panels × rows) boolean array.

    Each panel lists its members in tie-break order. A member's support is the number of
    members that gave its (non-empty) answer; the decision is the answer of the first member
    with the highest support (majority, ties to the first listed backer), none if no answer.
    """
    if not panels:
        return np.zeros((0, len(rows)), dtype=bool)
    models = sorted({m for p in panels for m in p})
    col = {m: j for j, m in enumerate(models)}
    codes: dict[str, int] = {"": 0}
    a = np.array([[codes.setdefault(r[m] or "", len(codes)) for m in models] for r in rows],
                 dtype=np.int16).reshape(len(rows), len(models))
    g = np.array([codes.get(gold[r["id"]], -1) for r in rows], dtype=np.int16)
    valid = a > 0
    right = a == g[:, None]
    out = np.zeros((len(panels), len(rows)), dtype=bool)
    n = np.arange(len(rows))[:, None]
    for size in sorted({len(p) for p in panels}):
        which = [i for i, p in enumerate(panels) if len(p) == size]
        members = np.array([[col[m] for m in panels[i]] for i in which], dtype=np.intp)
        for lo in range(0, len(which), chunk):
            mem = members[lo:lo + chunk]  # panels × size
            ans = a[:, mem]  # rows × panels × size
            ok = valid[:, mem]
            support = np.zeros(ans.shape, dtype=np.int16)
            for p in range(size):
                same = (ans[:, :, p:p + 1] == ans) & ok  # who backs member p's answer
                support[:, :, p] = same.sum(2) * ok[:, :, p]
            pos = support.argmax(2)  # the first member with the highest support
            chosen = mem[np.arange(len(mem))[None, :], pos]  # rows × panels: model index
            out[which[lo:lo + chunk]] = (right[n, chosen] & (support.max(2) > 0)).T
    return out


def write_config(home: Path, models: list[str], start: list[str], listed) -> None:
    import tomli_w

    from fscale_tui.engine.catalogue import family_of

    doc = {
        # Never called: the replay answers in process. A provider entry makes the models real
        # catalogue entries (usable, with a family) for the registry, challengers and evolve.
        "providers": {"replay": {"base_url": "http://127.0.0.1:9/v1"}},
        "models": {m: {"provider": "replay", "id": m, "tier": "medium", "family": family_of(m),
                       "cost": listed.get(m, (0, 0))[1]} for m in models},
        "panels": {"default": list(start)},
    }
    (home / "config.toml").write_text(tomli_w.dumps(doc))


def run_stream(seed: int, data: Path, start: list[str] | None, evolve_every: int,
               min_calls: int, feedback_rate: float, early: bool, tag: str, out: Path) -> dict:
    from fscale_tui.engine.config import load_settings
    from fscale_tui.engine.health import HealthStore
    from fscale_tui.engine.learning.calllog import CallRecorder, LearningStore
    from fscale_tui.engine.learning.challenger import eligible, thompson_pick
    from fscale_tui.engine.learning.evolve import apply_panel, propose_panel
    from fscale_tui.engine.registry import Registry
    from fscale_tui.engine.vote import (ScaleRequest, Vote, VoteRunner, can_decide_early,
                                        new_call_id, tally)

    gold, n_options, rows, models, listed = load_data(data)
    rng = random.Random(seed)
    rows = rows[:]
    rng.shuffle(rows)
    worst = sorted(models, key=lambda m: listed[m][0])[:3]
    start = list(start or worst)

    home = out / f"home-{tag}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    os.environ["FSCALE_HOME"] = str(home)
    os.environ["FSCALE_LOCAL"] = "off"
    env = {"FSCALE_HOME": str(home)}
    write_config(home, models, start, listed)
    settings = load_settings(env=env)
    recorder = CallRecorder(settings)
    store = LearningStore.for_settings(settings)
    correct: list[bool] = []
    panels: list[tuple[int, list[str]]] = [(0, start)]
    challengers: Counter[str] = Counter()
    feedback_given = 0
    t0 = time.monotonic()

    for n, row in enumerate(rows, 1):
        health = HealthStore(settings)
        registry = Registry(settings, is_down=health.is_down)
        members = registry.select(panel="default")
        labels = tuple("ABCDEFGHIJ"[: max(n_options[row["id"]], 2)])
        table = store.ratings()
        shadow = thompson_pick(eligible(settings.models.values(), exclude=[m.alias for m in members],
                                        available=registry.available, allow_thinking=False),
                               table, rng)
        request = ScaleRequest(question=f"MMLU-Pro #{row['id']}", answers=labels, id=new_call_id())
        ratings_now = {m: r.rating for m, r in table.items()}
        runner = VoteRunner(None, members, request, call_id=f"{request.id}-{n}", max_tokens=0,  # type: ignore[arg-type]
                            temperature=0.0, tie_break="rating", substitute=lambda m, u: None,
                            is_down=lambda a: False, rating_of=lambda a: ratings_now.get(a, 1500.0),
                            on_failure=lambda m, e: None)
        order = list(members)
        if early:
            rng.shuffle(order)  # arrival order
        votes: list[Vote] = []
        decided_early = False
        for i, m in enumerate(order):
            answer = row[m.alias] or None
            if answer is not None and answer not in labels:
                answer = None
            votes.append(Vote(model=m.alias, answer=answer, latency_s=0.0, raw=row[m.alias],
                              status="answered" if answer else "no_answer"))
            if early and can_decide_early(tally(votes, labels), labels, len(order) - i - 1):
                decided_early = True
                votes += [Vote(model=x.alias, answer=None, latency_s=None, status="cancelled")
                          for x in order[i + 1:]]
                break
        result = runner._finish(votes, labels, time.monotonic(), decided_early)
        if shadow is not None:
            answer = row[shadow] or None
            result.challenger = Vote(model=shadow, answer=answer if answer in labels else None,
                                     latency_s=0.0, raw=row[shadow],
                                     status="answered" if answer in labels else "no_answer")
            result.challenger_calls = 1
            challengers[shadow] += 1
        recorder(request, result)  # the engine's observer: call log + ratings
        correct.append(result.answer == gold[row["id"]])
        if feedback_rate and rng.random() < feedback_rate:
            feedback_given += 1
            if result.answer == gold[row["id"]]:
                store.add_feedback(result.id, "confirm")
            else:
                store.add_feedback(result.id, "override", label=gold[row["id"]])
        if n % evolve_every == 0:
            current = Registry(settings).panel("default")
            proposal = propose_panel(store.ratings(), current, candidates=list(settings.models),
                                     family_of=lambda a: settings.models[a].family,
                                     min_calls=min_calls, name="default")
            if proposal.changed:
                apply_panel(settings, proposal)  # what `fscale evolve --apply` does
                settings = load_settings(env=env)  # the next call's `scale` reads the new panel
                recorder.close()
                recorder = CallRecorder(settings)
            panels.append((n, Registry(settings).panel("default")))
    recorder.close()
    final = store.ratings()
    store.close()
    return {"seed": seed, "start": start, "correct": correct, "panels": panels, "rows": rows,
            "gold": gold, "models": models, "listed": listed, "challengers": challengers,
            "ratings": {m: round(r.rating, 1) for m, r in sorted(final.items(), key=lambda kv: -kv[1].rating)},
            "feedback": feedback_given, "seconds": time.monotonic() - t0}


def rolling(xs: list[bool], w: int) -> list[float]:
    out, s = [], 0
    for i, x in enumerate(xs):
        s += x
        if i >= w:
            s -= xs[i - w]
        out.append(s / min(i + 1, w))
    return out


def summarize(run: dict, last: int) -> dict:
    rows, gold, models = run["rows"], run["gold"], run["models"]
    true_acc = {m: sum(r[m] == gold[r["id"]] for r in rows) / len(rows) for m in models}
    key = lambda m: -true_acc[m]  # hindsight: ties broken by the truly best member
    combos = list(itertools.combinations(models, 3))
    right = hindsight_correct(rows, gold, [sorted(p, key=key) for p in combos])
    fixed = {p: right[i].tolist() for i, p in enumerate(combos)}
    # The first panel (in combination order) with the most right answers, as max() picks.
    best_all = combos[int(right.sum(1).argmax())]
    best_last = combos[int(right[:, -last:].sum(1).argmax())]
    start = tuple(sorted(run["start"]))
    start_key = next(p for p in fixed if tuple(sorted(p)) == start)
    evolved_last = sum(run["correct"][-last:]) / last
    return {
        "seed": run["seed"], "start": run["start"],
        "start_acc_all": sum(fixed[start_key]) / len(rows),
        "start_acc_last": sum(fixed[start_key][-last:]) / last,
        "evolved_acc_all": sum(run["correct"]) / len(rows),
        "evolved_acc_last": evolved_last,
        "best_panel": list(best_all), "best_acc_all": sum(fixed[best_all]) / len(rows),
        "best_acc_last": sum(fixed[best_all][-last:]) / last,
        "best_last_panel": list(best_last), "best_last_acc_last": sum(fixed[best_last][-last:]) / last,
        "gap_points": 100 * (sum(fixed[best_last][-last:]) / last - evolved_last),
        "final_panel": run["panels"][-1][1], "panels": run["panels"], "ratings": run["ratings"],
        "feedback": run["feedback"], "seconds": round(run["seconds"], 1),
        "curves": {"evolving": run["correct"], "best": fixed[best_all], "start": fixed[start_key]},
    }


def plot(summaries: list[dict], path: Path, window: int) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no PNG (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    s = summaries[0]
    x = range(1, len(s["curves"]["evolving"]) + 1)
    for name, style, label in (("best", "-", f"best fixed panel in hindsight ({', '.join(s['best_panel'])})"),
                               ("start", ":", f"starting panel ({', '.join(s['start'])})")):
        ax.plot(x, rolling(s["curves"][name], window), style, color="grey" if name == "start" else "black",
                lw=1.2, label=label)
    for s in summaries:
        fb = f", feedback on {s['feedback']} calls" if s["feedback"] else ", no labels"
        ax.plot(x, rolling(s["curves"]["evolving"], window), lw=1.4,
                label=f"evolving panel (seed {s['seed']}{fb})")
    for n, _ in summaries[0]["panels"][1:]:
        ax.axvline(n, color="#ddd", lw=0.6, zorder=0)
    ax.set_xlabel("call")
    ax.set_ylabel(f"accuracy (rolling {window} calls)")
    ax.set_title("fscale evolve on the MMLU-Pro replay: 3-model panel, evolve every 500 calls")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return str(path)


def resolve_out(args: argparse.Namespace) -> Path:
    """``--out`` or a fresh temporary directory; fills in the PNG and JSON paths."""
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="fscale-learning-"))
    out.mkdir(parents=True, exist_ok=True)
    args.png = args.png or out / "learning.png"
    args.json = args.json or out / "learning.json"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", default="0", help="comma-separated stream seeds")
    ap.add_argument("--start", default=None, help="starting panel, comma-separated (default: the 3 worst models)")
    ap.add_argument("--evolve-every", type=int, default=500)
    ap.add_argument("--min-calls", type=int, default=30)
    ap.add_argument("--last", type=int, default=1000)
    ap.add_argument("--feedback-rate", type=float, default=0.0,
                    help="also run with simulated user feedback on this fraction of calls")
    ap.add_argument("--no-early", action="store_true", help="every member answers (no early decision)")
    ap.add_argument("--out", type=Path, default=None,
                    help="directory for the runs' FSCALE_HOMEs, the PNG and the JSON "
                         "(default: a new temporary directory)")
    ap.add_argument("--png", type=Path, default=None, help="default: OUT/learning.png")
    ap.add_argument("--json", type=Path, default=None, help="default: OUT/learning.json")
    args = ap.parse_args(argv)
    out = resolve_out(args)
    t0 = time.monotonic()
    start = args.start.split(",") if args.start else None
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [0.0] + ([args.feedback_rate] if args.feedback_rate > 0 else [])
    summaries = []
    for rate in variants:
        for seed in seeds:
            tag = f"{seed}" + (f"-fb{rate:g}" if rate else "")
            run = run_stream(seed, args.data, start, args.evolve_every, args.min_calls, rate,
                             not args.no_early, tag, out)
            s = summarize(run, args.last)
            summaries.append(s)
            fb = f"simulated feedback on {s['feedback']} calls ({rate:.0%})" if rate else "no labels"
            print(f"seed {seed}, {fb}: {s['seconds']}s")
            print(f"  starting panel {s['start']}: {s['start_acc_all']:.3f} overall, "
                  f"{s['start_acc_last']:.3f} on the last {args.last}")
            print(f"  evolving panel: {s['evolved_acc_all']:.3f} overall, "
                  f"{s['evolved_acc_last']:.3f} on the last {args.last}; final panel {s['final_panel']}")
            print(f"  best fixed panel in hindsight {s['best_panel']}: {s['best_acc_all']:.3f} overall, "
                  f"{s['best_acc_last']:.3f} on the last {args.last}")
            print(f"  best fixed panel on the last {args.last} {s['best_last_panel']}: "
                  f"{s['best_last_acc_last']:.3f}  → gap {s['gap_points']:+.1f} points")
            print("  panels: " + "; ".join(f"@{n}: {','.join(p)}" for n, p in s["panels"]))
            print("  final ratings: " + ", ".join(f"{m} {r:.0f}" for m, r in s["ratings"].items()))
    no_fb = [s for s in summaries if not s["feedback"]]
    gaps = [s["gap_points"] for s in no_fb]
    print(f"\nwithout labels, over {len(no_fb)} seed(s): evolved last-{args.last} accuracy "
          f"{sum(s['evolved_acc_last'] for s in no_fb) / len(no_fb):.3f}, "
          f"mean gap to the best fixed panel {sum(gaps) / len(gaps):+.2f} points, worst {max(gaps):+.2f}")
    fb = [s for s in summaries if s["feedback"]]
    if fb:
        g = [s["gap_points"] for s in fb]
        print(f"with simulated feedback ({args.feedback_rate:.0%}): evolved last-{args.last} accuracy "
              f"{sum(s['evolved_acc_last'] for s in fb) / len(fb):.3f}, mean gap {sum(g) / len(g):+.2f}, "
              f"worst {max(g):+.2f}")
    print("curve:", plot([no_fb[0]] + fb[:1], args.png, window=500))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([{k: v for k, v in s.items() if k != "curves"} for s in summaries],
                                    indent=1, default=str))
    print(f"wall time {time.monotonic() - t0:.1f}s; output in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
