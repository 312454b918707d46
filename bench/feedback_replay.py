"""Rating replay: how long replacing or undoing feedback takes on a large call log.

Replacing or undoing feedback recomputes the ratings (and their history) by replaying the whole
log in one write transaction (``engine/learning/calllog.py:replay_ratings``). This bench builds a
log of N calls (default 20,000; 3 members + a shadow challenger each, a mix of agreement and
dissent over 12 models, feedback on 1% of the calls) in a temporary file, then times:

- ``replay``: ``LearningStore.replay()`` alone (the recompute, inside its transaction);
- ``replace``: ``add_feedback`` of an ``--override`` replacing a ``--confirm`` (finds the call,
  marks the old row superseded, replays);
- ``undo``: ``undo_feedback`` on one call;
- ``append``: a first feedback on a call (no replay: applied incrementally), for comparison.

Prints the median of R runs (default 5) of each, and the log's size.

Usage: python bench/feedback_replay.py [--calls 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fscale_tui.engine.learning.store import LearningStore


def build(store: LearningStore, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    models = [f"model-{i:02d}" for i in range(12)]
    skill = {m: rng.uniform(0.55, 0.95) for m in models}
    calls, replies = [], []
    t0 = time.time() - n
    for seq in range(1, n + 1):
        truth = rng.choice(["YES", "NO"])
        members = rng.sample(models, 4)
        votes = [(m, truth if rng.random() < skill[m] else ("NO" if truth == "YES" else "YES"))
                 for m in members]
        decided = max(("YES", "NO"), key=lambda lab: sum(v == lab for _, v in votes[:3]))
        calls.append((seq, f"call-{seq}", "scale", t0 + seq, json.dumps(["YES", "NO"]),
                      json.dumps(members[:3]), decided, "decided"))
        replies += [(seq, "challenger" if i == 3 else "member", m, v, "answered")
                    for i, (m, v) in enumerate(votes)]
    with store.transaction() as conn:
        conn.executemany("INSERT INTO calls (seq, id, kind, ts, labels, members, answer, status) "
                         "VALUES (?,?,?,?,?,?,?,?)", calls)
        conn.executemany("INSERT INTO replies (call_seq, role, model, answer, status) "
                         "VALUES (?,?,?,?,?)", replies)
    store.replay()
    for seq in range(1, n + 1, 100):
        store.add_feedback(f"call-{seq}", "confirm", now=t0 + seq + 0.5)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LearningStore(Path(tmp) / "learning.db") as store:
        t = timed(lambda: build(store, args.calls))
        n_fb = store.conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
        n_rep = store.conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        n_hist = store.conn.execute("SELECT COUNT(*) FROM rating_history").fetchone()[0]
        print(f"log: {args.calls} calls, {n_rep} replies, {n_fb} feedback rows, "
              f"{n_hist} rating-history rows (built in {t:.1f} s)")
        rows = {"replay": [], "replace": [], "undo": [], "append": []}
        for r in range(args.runs):
            seq = 1 + 100 * r  # a call with a confirm on it, early in the log (worst case)
            rows["replay"].append(timed(store.replay))
            rows["replace"].append(timed(lambda s=seq: store.add_feedback(
                f"call-{s}", "override", label="NO")))
            rows["undo"].append(timed(lambda s=seq: store.undo_feedback(f"call-{s}")))
            rows["append"].append(timed(lambda s=seq: store.add_feedback(f"call-{s + 1}", "confirm")))
        for name, values in rows.items():
            print(f"{name:<8} median {statistics.median(values) * 1000:8.1f} ms   "
                  f"max {max(values) * 1000:8.1f} ms   ({len(values)} runs)")


if __name__ == "__main__":
    main()
