"""Learning backtest: does the evolving panel find the best panel without labels?

Replays the MMLU-Pro replay set (real A–J answers of 15 public LLMs to 5,943 questions; see
``/work/shared/data/mmlu_pro_replay/README.md``) as a stream of scale calls through fscale's own
learning code, in process, at zero cost:

* a temporary FSCALE_HOME per run whose ``config.toml`` declares the catalogue's models (families
  from ``catalogue.family_of``) and the starting panel as ``[panels] default``;
* each call: the panel is ``Registry(settings).select(panel="default")`` (what ``scale`` uses);
  the shadow challengers are the engine's rule (``challenger.eligible`` + ``plan``: outsiders
  worth exploring, Thompson draws from the label-free Beta posteriors, within ``allowance`` —
  ``--shadow-budget`` shadow calls per decision call over the last 200 calls, the engine's
  ``[learning] shadow_budget`` by default — and at most ``--challengers`` per call); members
  arrive in a random order and
  ``voting.Majority.can_decide_early`` cancels the rest, as live; the decision is
  ``Majority("rating")`` with the engine's tie-break key (the estimate's accuracy); the result
  is built by ``vote.result_from`` and logged by ``LearningStore.record_call`` via
  ``calllog.record_from_scale`` (the call log and its Elo games, as the engine's writer does);
* the estimates are refreshed every ``--refresh-every`` calls with ``calllog.refresh_tracker``
  (the engine refreshes its snapshot at most once a second, incrementally, the same way);
* every ``--evolve-every`` calls: ``evolve.propose_panel`` (ranked by the estimate) +
  ``evolve.apply_panel``, exactly as ``fscale evolve --apply``; the next call re-reads config.

**Honest protocol** (``bench/protocol.py``): per seed, ``honest_split`` splits questions into
train/val/test and picks 4 ``onboarded`` models. The stream is the train+val questions
(shuffled) then the test questions (shuffled). The catalogue starts with the 10 other models;
the 4 onboarded ones are added to config.toml after the first third of the stream (a user adding
models). The run starts from the 3 worst models of the starting catalogue (models.csv accuracy)
and uses no label unless ``--feedback-rate`` > 0 (a user confirming, or overriding with the gold
letter, that fraction of calls at random, drawn from a generator of its own). Each call's
arrival order and shadow draws come from a generator seeded by (seed, call) (``--rng call``,
common random numbers): runs of one seed with and without feedback, or with two
configurations, see the same arrivals and draws on every call and differ only where what they
learned differs (``--rng shared``: one generator per run, the figures before). The score is the last ``--last`` (1,000) calls — all test questions — against the
best fixed 3-model panel *in hindsight on those same calls*: the best of all 15 × 14 × 13
ordered panels (3 members and the order that breaks their ties, as ``tie_break = "order"``),
chosen on those 1,000 calls. A no-decision counts as wrong.

Also printed: shadow calls per call and per decision call, the busiest 200-call window,
feedback against no labels seed by seed, and the **label-free ceiling**: the estimate fitted
with every model answering every call of the stream (no budget), the panel evolve proposes from
it and the best of all panels whose ties follow that ranking — what no label-free learning with
this estimate can beat.

Knobs (``--challengers``, ``--evolve-every``, ``--min-calls``, ``--z``, ``--prior``,
``--family-margin``, ``--explore-sd``, ``--order-alpha``) were chosen with ``--tune``: streams built
from each tuning seed's train questions then val questions only (seeds 100–104, never the
reported ones; the score is the last 1,000 calls, all val).

    python bench/learning.py                                   # seeds 0-4, no labels and 2 %
    python bench/learning.py --tune --seeds 100,101,102,103,104 --challengers 1,2,3
    python bench/learning.py --tune --seeds 100,101,102,103,104 \
        --family-margin 0,0.05 --explore-sd 0.05,0.07 --no-ceiling
    python bench/learning.py --tune --seeds 100,101,102,103,104,105,106,107,108,109 \
        --feedback-rate 0.1 --no-ceiling                       # labels on 10 % of the calls
    python bench/learning.py --ranking elo                     # the old Elo decisions
    python bench/learning.py --seeds 0,1,2,3,4,5,6,7,8,9 --feedback-rate 0 --no-ceiling \
        --shadow-group 2                                       # a probe: shadows in pairs
    python bench/learning.py --speed                           # the estimate on a 20k-call log

Output: one block per run, the summary (mean / worst gap), and ``--json`` (default: a new
temporary directory; never inside the repository).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
import typing
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
DEFAULT_DATA = Path(os.environ.get("FSCALE_REPLAY_DATA", "/work/shared/data/mmlu_pro_replay"))


def panel_decision(row: dict, panel: list[str]) -> str | None:
    """The reference rule: majority of the panel; a tie goes to the first listed backer."""
    votes = [row[m] for m in panel if row[m]]
    if not votes:
        return None
    counts = {a: votes.count(a) for a in votes}
    top = max(counts.values())
    return next(row[m] for m in panel if row[m] and counts[row[m]] == top)


def hindsight_correct(rows: list[dict], gold: dict, panels: list[list[str]],
                      chunk: int = 256) -> np.ndarray:
    """``panel_decision`` right/wrong for many panels at once: a (panels × rows) boolean array.

    ``rows``: ``{"id", model: letter or ""}``; each panel lists its members in tie-break order.
    A member's support is the number of members that gave its (non-empty) answer; the decision
    is the answer of the first member with the highest support, none if no answer.
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


def replay_rows(rs, items: list[int]) -> tuple[list[dict], dict]:
    """The replay's answers of ``items`` as ``hindsight_correct`` rows, and their gold letters."""
    rows = [{"id": rs.tasks[i].id, **{m: rs.answers[m][i] or "" for m in rs.models}}
            for i in items]
    return rows, {rs.tasks[i].id: rs.tasks[i].label for i in items}


def write_config(home: Path, models: list[str], panel: list[str], listed: dict) -> None:
    """config.toml: the catalogue (``listed``: model -> (accuracy, USD per Mtok)) and panel."""
    import tomli_w

    from fscale_tui.engine.catalog.builtins import family_of

    doc = {
        # Never called: the replay answers in process. A provider entry makes the models real
        # catalogue entries (usable, with a family) for the registry, challengers and evolve.
        "providers": {"replay": {"base_url": "http://127.0.0.1:9/v1"}},
        "models": {m: {"provider": "replay", "id": m, "tier": "medium", "family": family_of(m),
                       "cost": listed.get(m, (0.0, 0.0))[1]} for m in models},
        "panels": {"default": list(panel)},
    }
    (home / "config.toml").write_text(tomli_w.dumps(doc))


def stream_of(rs, seed: int, tune: bool) -> tuple[list[int], object]:
    """The question order of one run and its split (see the module docstring)."""
    from protocol import honest_split

    sp = honest_split(rs, seed)
    rng = np.random.default_rng(seed)
    first, second = (sp.train, sp.val) if tune else (np.concatenate([sp.train, sp.val]), sp.test)
    return [int(i) for i in rng.permutation(first)] + [int(i) for i in rng.permutation(second)], sp


class Knobs(typing.NamedTuple):
    """One configuration of the learning loop (a grid point with ``--tune``)."""

    challengers: int  # most shadows per call
    evolve_every: int  # calls between evolves
    family_margin: float  # evolve.FAMILY_MARGIN: what a seat held by the family costs
    explore_sd: float  # challenger.EXPLORE_SD: a model is worth a shadow while its sd is above
    peers: int = 3  # reliability.PEERS: the top models ordered by their mutual agreement
    min_together: int = 50  # reliability.PEER_MIN_PAIRS: calls with the strongest voter

    def __str__(self) -> str:
        return (f"≤{self.challengers} shadows, evolve every {self.evolve_every}, "
                f"family margin {self.family_margin:g}, explore sd "
                f"{self.explore_sd:g}, peers {self.peers}, together {self.min_together}")


def run_stream(rs, seed: int, args: argparse.Namespace, feedback_rate: float, out: Path,
               knobs: Knobs) -> dict:
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.learning import reliability as REL
    from fscale_tui.engine.learning.store import (
        LearningStore,
        record_from_scale,
    )
    from fscale_tui.engine.learning.rows import refresh_tracker
    from fscale_tui.engine.learning.challenger import (
        BUDGET_WINDOW,
        allowance,
        eligible,
        plan,
        thompson_pick,
        worth_exploring,
    )
    from fscale_tui.engine.learning.evolve import apply_panel, propose_panel
    from fscale_tui.engine.catalog.registry import Registry
    from fscale_tui.engine.decide.vote import ballots, result_from
    from fscale_tui.engine.base.calls import ScaleRequest, Vote
    from fscale_tui.engine.decide.rules.majority import Majority

    order, sp = stream_of(rs, seed, args.tune)
    # Common random numbers (``--rng call``): each call's arrival order and shadow draws come
    # from generators of their own, seeded by (seed, call), so two runs of one seed (with and
    # without feedback, or two configurations) see the same arrivals and the same draws on
    # every call whatever the other calls consumed. With one generator per run (``--rng
    # shared``, the figures before) the first label, or any change of a posterior (a Beta
    # draw's rejection sampler takes a varying count of numbers), reshuffled every later call.
    shared = random.Random(seed)

    def call_rng(n: int, stream: int) -> random.Random:
        if args.rng == "shared":
            return shared
        return random.Random(((seed * 1_000_003 + n) * 4 + stream) * 1_009 + args.rng_salt)

    # Which calls get feedback is drawn from its own stream: with one shared generator, giving
    # feedback would also reshuffle every later arrival order and shadow draw, and the runs
    # with and without feedback would differ by that noise rather than by the labels.
    fb_rng = random.Random(1_000_003 * (seed + 1))
    catalogue = [m for m in rs.models if m not in sp.onboarded]
    start = sorted(catalogue, key=lambda m: rs.accuracy[m])[:3]
    join_at = len(order) // 3
    max_challengers, evolve_every = knobs.challengers, knobs.evolve_every
    tag = (f"{'tune' if args.tune else 'run'}-{seed}-fb{feedback_rate:g}-c{max_challengers}"
           f"-e{evolve_every}-f{knobs.family_margin:g}-x{knobs.explore_sd:g}"
           f"-p{knobs.peers}-t{knobs.min_together}")
    home = out / f"home-{tag}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {"FSCALE_HOME": str(home), "FSCALE_LOCAL": "off"}
    os.environ.update(env)
    listed = {m: (rs.accuracy[m], rs.costs.get(m, 0.0)) for m in rs.models}
    write_config(home, catalogue, start, listed)
    settings = load_settings(env=env)
    registry = Registry(settings)
    store = LearningStore.for_settings(settings)
    from fscale_tui.engine.catalog.builtins import family_of
    from fscale_tui.engine.learning import evolve as EVOLVE

    if args.min_families is not None:  # what a proposed panel must span
        EVOLVE.MIN_FAMILIES = args.min_families
    if args.reanchor is not None:
        REL.REANCHOR = args.reanchor
    REL.PEER_MIN_PAIRS = knobs.min_together  # the peers' order and the shadows alike
    if args.below is not None:
        REL.BELOW = args.below
    if args.order_alpha is not None:
        REL.ORDER_ALPHA = args.order_alpha
    tracker = REL.ReliabilityTracker(a=args.prior[0], b=args.prior[1],
                                     family_of=family_of if args.families else None,
                                     peers=knobs.peers)
    estimates: dict = {}
    elo = args.ranking == "elo"
    table: dict = {}
    prior_mean = args.prior[0] / sum(args.prior)

    def key(alias: str) -> float:  # the engine's --tie-break rating key
        if elo:
            r = table.get(alias)
            return r.rating if r is not None else 1500.0
        e = estimates.get(alias)
        return e.accuracy if e is not None else prior_mean

    rule = Majority("rating", key)
    correct: list[bool] = []
    panels: list[tuple[int, list[str]]] = [(0, list(start))]
    shadows_per_call: list[int] = []
    decisions_per_call: list[int] = []
    window: collections.deque = collections.deque(maxlen=BUDGET_WINDOW)  # (decision, shadow)
    feedback_given = 0
    t0 = time.monotonic()
    fit_s = 0.0
    for n, item in enumerate(order, 1):
        if n == join_at + 1:  # a user adds the onboarded models to the catalogue
            current = registry.panel("default")
            write_config(home, rs.models, current, listed)
            settings = load_settings(env=env)
            registry = Registry(settings)
        task = rs.tasks[item]
        labels = tuple(task.answers)
        members = registry.select(panel="default")
        names = [m.alias for m in members]
        pool = eligible(settings.models.values(), exclude=names, available=registry.available,
                        allow_thinking=False)
        if elo:
            one = thompson_pick(pool, table, call_rng(n, 1))
            shadow = [one] if one else []
        else:
            seats = [estimates[a].accuracy for a in names if a in estimates]
            bar = min(seats) if len(seats) == len(names) else None  # as the engine does
            worth = dict(voters=names, bar=bar, explore_sd=knobs.explore_sd,
                         min_together=knobs.min_together, peers=knobs.peers,
                         family_of=lambda a, models=settings.models: models[a].family)
            budget = allowance(window, args.shadow_budget)
            if args.shadow_group > 1 and budget < min(
                    args.shadow_group, max_challengers,
                    len(worth_exploring(pool, estimates, **worth))):
                budget = 0  # the probe: wait until the allowance pays for a group
            shadow = plan(pool, estimates, budget=budget, max_k=max_challengers,
                          rng=call_rng(n, 1), **worth)
        shadows_per_call.append(len(shadow))
        request = ScaleRequest(question=f"MMLU-Pro #{task.id}", answers=labels)
        call_id = f"{tag}-{n}"

        def vote(alias: str, item: int = item, labels: tuple = labels,
                 latency: float = 0.0) -> Vote:
            a = rs.answers[alias][item]
            ok = a is not None and a in labels
            return Vote(alias, answer=a if ok else None, latency_s=latency, raw=a,
                        status="answered" if ok else "no_answer")

        position = {a: i for i, a in enumerate(names)}
        arrival = names[:]
        call_rng(n, 0).shuffle(arrival)
        votes: list[Vote] = []
        decided_early = False
        for i, alias in enumerate(arrival):
            votes.append(vote(alias, latency=0.1 * (i + 1)))  # arrival order, as live
            pending = [1.0] * (len(arrival) - i - 1)
            if pending and rule.can_decide_early(ballots(votes, rule, position), labels, pending):
                decided_early = True
                votes += [Vote(x, status="cancelled") for x in arrival[i + 1:]]
                break
        tally = rule.decide(ballots(votes, rule, position), labels)
        result = result_from(call_id, request, votes, tally, calls_made=len(votes),
                             started=time.monotonic(), decided_early=decided_early)
        result.challengers = [vote(a) for a in shadow]
        result.challenger_calls = len(shadow)
        store.record_call(record_from_scale(request, result), keep_text=False)
        window.append((len(votes), len(shadow)))
        decisions_per_call.append(len(votes))
        correct.append(result.answer == task.label)
        if feedback_rate and fb_rng.random() < feedback_rate:
            feedback_given += 1
            if result.answer == task.label:
                store.add_feedback(call_id, "confirm")
            else:
                store.add_feedback(call_id, "override", label=task.label)
        if n % args.refresh_every == 0 or n % evolve_every == 0:
            t = time.monotonic()
            if elo:
                table = store.ratings()
            else:
                estimates = refresh_tracker(store.conn, tracker)
            fit_s += time.monotonic() - t
        if n % evolve_every == 0:
            current = registry.panel("default")
            proposal = propose_panel(
                store.ratings(), current, candidates=list(settings.models),
                family_of=lambda a, models=settings.models: models[a].family,
                min_calls=args.min_calls,
                name="default", estimates=None if elo else estimates, z=args.z,
                family_margin=knobs.family_margin)
            if proposal.changed:
                apply_panel(settings, proposal)  # what `fscale evolve --apply` does
                settings = load_settings(env=env)  # the next call's `scale` reads the new panel
                registry = Registry(settings)
            panels.append((n, registry.panel("default")))
    final = refresh_tracker(store.conn, tracker)
    store.close()
    return {"seed": seed, "start": start, "order": order, "correct": correct, "panels": panels,
            "onboarded": list(sp.onboarded), "join_at": join_at,
            "shadows": shadows_per_call, "decisions": decisions_per_call,
            "feedback": feedback_given,
            "estimates": {m: round(e.accuracy, 3) for m, e in
                          sorted(final.items(), key=lambda kv: -kv[1].accuracy)},
            "seconds": time.monotonic() - t0, "fit_seconds": fit_s}


def summarize(rs, run: dict, last: int) -> dict:
    rows, gold = replay_rows(rs, run["order"][-last:])
    # Every fixed panel: 3 members in every tie-break order (the `tie_break = "order"` setting).
    combos = [list(p) for p in itertools.permutations(rs.models, 3)]
    right = hindsight_correct(rows, gold, combos)
    best = int(right.sum(1).argmax())
    best_acc = float(right[best].mean())
    evolved = float(np.mean(run["correct"][-last:]))
    shadows = np.array(run["shadows"])
    decisions = np.array(run["decisions"])
    # The budget's promise: over every 200 consecutive calls, shadows ≤ share × decisions.
    w = 200
    cs, cd = np.concatenate([[0], np.cumsum(shadows)]), np.concatenate([[0], np.cumsum(decisions)])
    share = (cs[w:] - cs[:-w]) / np.maximum(cd[w:] - cd[:-w], 1) if len(shadows) >= w else \
        np.array([shadows.sum() / max(1, decisions.sum())])
    return {
        "seed": run["seed"], "start": run["start"], "onboarded": run["onboarded"],
        "evolved_acc_last": round(evolved, 4), "evolved_acc_all": round(float(np.mean(run["correct"])), 4),
        "best_panel": combos[best], "best_acc_last": round(best_acc, 4),
        "gap_points": round(100 * (best_acc - evolved), 2),
        "final_panel": run["panels"][-1][1], "panels": run["panels"],
        "feedback": run["feedback"], "estimates": run["estimates"],
        "challenger_calls": int(shadows.sum()), "calls": len(shadows),
        "calls_with_several": int((shadows > 1).sum()),
        "decision_calls": int(decisions.sum()),
        "shadow_per_decision": round(float(shadows.sum() / max(1, decisions.sum())), 4),
        "max_window_share": round(float(share.max()), 4),
        "challengers_per_call_first_1000": round(float(shadows[:1000].mean()), 3),
        "challengers_per_call_last_1000": round(float(shadows[-1000:].mean()), 3),
        "seconds": round(run["seconds"], 1), "fit_seconds": round(run["fit_seconds"], 2),
    }


def label_free_ceiling(rs, run: dict, last: int, family_margin: float, peers: int) -> dict:
    """What no label can fix: the estimate with **every** model answering **every** call of
    the stream (no exploration limit, no budget), the panel evolve proposes from it, and its
    gap on the last calls with ties broken by that estimate (as ``Majority("rating")``); and
    the best of *all* 3-model panels whose ties follow that ranking. When these gaps are
    above the target, no amount of label-free learning with this estimate reaches it."""
    from fscale_tui.engine.catalog.builtins import family_of
    from fscale_tui.engine.learning import reliability as REL
    from fscale_tui.engine.learning.evolve import propose_panel

    arrays = REL.VoteArrays()
    for i in run["order"]:
        t = rs.tasks[i]
        arrays.add(REL.Call(t.answers, [(m, rs.answers[m][i] if rs.answers[m][i] in t.answers
                                         else None) for m in rs.models]))
    est = REL.fit(arrays, family_of=family_of, peers=peers).estimates
    proposal = propose_panel({}, [], candidates=list(rs.models), family_of=family_of, size=3,
                             estimates=est, family_margin=family_margin, min_calls=0)
    rank = sorted(rs.models, key=lambda m: -est[m].accuracy)
    rows, gold = replay_rows(rs, run["order"][-last:])
    panel = sorted(proposal.proposed, key=rank.index)
    combos = [sorted(c, key=rank.index) for c in itertools.combinations(rs.models, 3)]
    perms = [list(p) for p in itertools.permutations(rs.models, 3)]
    best = float(hindsight_correct(rows, gold, perms).mean(1).max())
    right = hindsight_correct(rows, gold, [panel] + combos).mean(1)
    return {"ranking": rank[:4], "panel": panel,
            "gap_points": round(100 * (best - float(right[0])), 2),
            "best_ordered_gap_points": round(100 * (best - float(right[1:].max())), 2)}


def rolling(xs: list[bool], w: int) -> list[float]:
    out, total = [], 0
    for i, x in enumerate(xs):
        total += x
        if i >= w:
            total -= xs[i - w]
        out.append(total / min(i + 1, w))
    return out


def plot(rs, runs: list[dict], summaries: list[dict], path: Path, window: int = 250) -> str:
    """Rolling accuracy of the evolving panel (each run) beside the first run's best fixed
    panel and starting panel, over the whole stream."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no PNG (pip install matplotlib)"
    first, s0 = runs[0], summaries[0]
    order = first["order"]
    rows, gold = replay_rows(rs, order)
    fixed = hindsight_correct(rows, gold, [s0["best_panel"], s0["start"]])
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    x = range(1, len(order) + 1)
    ax.plot(x, rolling(list(fixed[0]), window), color="black", lw=1.2,
            label=f"best fixed panel on the last 1,000 (seed {s0['seed']})")
    ax.plot(x, rolling(list(fixed[1]), window), ":", color="grey", lw=1.2,
            label=f"starting panel ({', '.join(s0['start'])})")
    for run, s in zip(runs, summaries):
        fb = f", feedback on {s['feedback']} calls" if s["feedback"] else ", no labels"
        ax.plot(x, rolling(run["correct"], window), lw=1.1, label=f"evolving (seed {s['seed']}{fb})")
    ax.axvline(first["join_at"], color="#bbb", lw=0.8, ls="--")
    ax.set_xlabel("call (the last 1,000 are test questions)")
    ax.set_ylabel(f"accuracy (rolling {window} calls)")
    ax.set_title("fscale evolve, label-free estimate, from the 3 worst models (MMLU-Pro replay)")
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return str(path)


def speed(out: Path, n_calls: int = 20_000) -> None:
    """The estimate on a ``n_calls`` log (8 models, 3 members + 2 challengers per call): cold
    fit from SQLite, a warm refresh after 100 more calls, and the Elo replay for comparison."""
    from fscale_tui.engine.learning import reliability as REL
    from fscale_tui.engine.learning.store import (
        CallRecord,
        LearningStore,
        ReplyRecord,
    )
    from fscale_tui.engine.learning.rows import refresh_tracker

    rng = random.Random(0)
    labels = list("ABCDEFGHIJ")
    acc = {f"model-{j}": 0.3 + 0.06 * j for j in range(8)}
    path = out / "speed" / "learning.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)

    def call(i: int) -> CallRecord:
        truth = rng.choice(labels)
        voters = rng.sample(sorted(acc), 5)
        return CallRecord(id=f"s{i}", labels=labels, members=voters[:3], replies=[
            ReplyRecord(m, role="member" if k < 3 else "challenger",
                        answer=truth if rng.random() < acc[m] else rng.choice(labels))
            for k, m in enumerate(voters)])

    with LearningStore(path) as store:
        with store.transaction() as conn:  # written fast; the reads below are what is measured
            for i in range(n_calls):
                rec = call(i)
                cur = conn.execute("INSERT INTO calls (id, kind, ts, labels, members) "
                                   "VALUES (?, 'scale', ?, ?, ?)",
                                   (rec.id, float(i), json.dumps(labels), json.dumps(rec.members)))
                conn.executemany("INSERT INTO replies (call_seq, role, model, answer, status) "
                                 "VALUES (?, ?, ?, ?, 'answered')",
                                 [(cur.lastrowid, r.role, r.model, r.answer) for r in rec.replies])
        t = time.perf_counter()
        tracker = REL.ReliabilityTracker()
        refresh_tracker(store.conn, tracker)
        cold, cold_it = time.perf_counter() - t, tracker.iterations
        for i in range(100):
            store.record_call(call(n_calls + i), learn=False)
        t = time.perf_counter()
        refresh_tracker(store.conn, tracker)
        warm, warm_it = time.perf_counter() - t, tracker.iterations
        t = time.perf_counter()
        store.replay()
        elo = time.perf_counter() - t
    print(f"{n_calls:,}-call log, {5 * n_calls:,} replies: estimate cold {cold:.2f}s "
          f"({cold_it} EM iterations), warm refresh after 100 calls {warm:.2f}s "
          f"({warm_it} iterations); Elo replay {elo:.2f}s")


def resolve_out(args: argparse.Namespace) -> Path:
    """``--out`` or a fresh temporary directory (never inside the repository); fills in the
    PNG and JSON paths."""
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="fscale-learning-"))
    out.mkdir(parents=True, exist_ok=True)
    args.png = args.png or out / "learning.png"
    args.json = args.json or out / "learning.json"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (≥ 5 to report)")
    ap.add_argument("--tune", action="store_true",
                    help="tuning streams: train then val questions only (use seeds 100-104)")
    ap.add_argument("--ranking", choices=("estimate", "elo"), default="estimate",
                    help="decisions by the label-free estimate (default) or by Elo (the old rule)")
    ap.add_argument("--challengers", default="3",
                    help="max shadow challengers per call (comma-separated: a grid with --tune)")
    ap.add_argument("--evolve-every", default="250", help="calls between evolves (grid allowed)")
    ap.add_argument("--min-calls", type=int, default=30, help="replies a model needs for a seat")
    ap.add_argument("--z", type=float, default=1.0, help="evolve ranks by mean − z·sd")
    ap.add_argument("--family-margin", default=None,
                    help="evolve: what a seat held by a model's family costs it (default: the "
                         "engine's evolve.FAMILY_MARGIN; grid allowed)")
    ap.add_argument("--explore-sd", default=None,
                    help="a model is worth a shadow while its posterior sd is above this "
                         "(default: the engine's challenger.EXPLORE_SD; grid allowed)")
    ap.add_argument("--peers", default=None,
                    help="how many of the best-estimated models are ordered by their mutual "
                         "agreement (default: the engine's reliability.PEERS; 0: off; grid allowed)")
    ap.add_argument("--min-together", default=None,
                    help="a model is worth a shadow until it replied on this many calls together "
                         "with the call's strongest voter (default: the engine's "
                         "reliability.PEER_MIN_PAIRS; grid allowed)")
    ap.add_argument("--rng", choices=("call", "shared"), default="call",
                    help="each call's arrival order and shadow draws from a generator seeded by "
                         "(seed, call): common random numbers, so runs of one seed differ only by "
                         "what they learned (default); or one generator per run (the figures "
                         "before)")
    ap.add_argument("--rng-salt", type=int, default=0,
                    help="with --rng call: another draw of the per-call generators (another "
                         "sample of the same seeds)")
    ap.add_argument("--min-families", type=int, default=None,
                    help="families a proposed panel must span when another family qualifies "
                         "(default: the engine's evolve.MIN_FAMILIES; 1: off)")
    ap.add_argument("--reanchor", type=int, default=None,
                    help="times the peers' anchors are chosen again down the agreement's order "
                         "(default: the engine's reliability.REANCHOR; 0: the consensus's choice)")
    ap.add_argument("--below", type=float, default=None,
                    help="a model placed through the anchors' partners this share below the "
                         "weakest anchor needs no shadow beside the best (default: the engine's "
                         "reliability.BELOW; 1: never)")
    ap.add_argument("--order-alpha", type=float, default=None,
                    help="labels reorder two models when their paired record on the labelled "
                         "calls both replied to rejects 'equally good' at this level, by a test "
                         "valid however often it is checked (default: the engine's "
                         "reliability.ORDER_ALPHA)")
    ap.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                    help="skip the label-free ceiling (every model on every call)")
    ap.add_argument("--shadow-budget", type=float, default=None,
                    help="shadow calls per decision call over the last 200 calls (default: the "
                         "engine's [learning] shadow_budget default)")
    ap.add_argument("--shadow-group", type=int, default=1,
                    help="a probe, not the engine's rule: shadows only in groups of N (as many "
                         "outsiders as are worth it, up to N), a call waiting until the "
                         "allowance pays for one, so outsiders answer the same calls")
    ap.add_argument("--prior", default="2,2", help="Beta prior a,b on a model's accuracy")
    ap.add_argument("--no-families", dest="families", action="store_false",
                    help="plain Dawid-Skene (no leave-family-out scoring)")
    ap.add_argument("--refresh-every", type=int, default=25, help="calls between estimate refreshes")
    ap.add_argument("--last", type=int, default=1000)
    ap.add_argument("--feedback-rate", type=float, default=0.02,
                    help="also run with simulated user feedback on this fraction of calls (0: off)")
    ap.add_argument("--out", type=Path, default=None,
                    help="directory for the runs' FSCALE_HOMEs and the JSON (default: a new "
                         "temporary directory)")
    ap.add_argument("--json", type=Path, default=None, help="default: OUT/learning.json")
    ap.add_argument("--png", type=Path, default=None,
                    help="rolling-accuracy plot of the first configuration (default: OUT/learning.png)")
    ap.add_argument("--speed", action="store_true",
                    help="only time the estimate on a 20,000-call log (and the Elo replay)")
    args = ap.parse_args(argv)
    out = resolve_out(args)
    if args.speed:
        speed(out)
        return 0
    args.prior = tuple(float(x) for x in args.prior.split(","))
    if args.shadow_budget is None:
        from fscale_tui.engine.base.settings import SETTINGS

        args.shadow_budget = float(SETTINGS["shadow_budget"].default)

    from protocol import load

    rs, _ = load(args.data)
    seeds = [int(s) for s in args.seeds.split(",")]
    rates = [0.0] + ([args.feedback_rate] if args.feedback_rate > 0 else [])
    from fscale_tui.engine.learning.challenger import EXPLORE_SD
    from fscale_tui.engine.learning.evolve import FAMILY_MARGIN
    from fscale_tui.engine.learning.reliability import PEER_MIN_PAIRS, PEERS

    grid = [Knobs(int(c), int(e), float(f), float(x), int(k), int(t))
            for c in args.challengers.split(",") for e in args.evolve_every.split(",")
            for f in (args.family_margin or str(FAMILY_MARGIN)).split(",")
            for x in (args.explore_sd or str(EXPLORE_SD)).split(",")
            for k in (args.peers or str(PEERS)).split(",")
            for t in (args.min_together or str(PEER_MIN_PAIRS)).split(",")]
    t0 = time.monotonic()
    report = []
    plotted: list[tuple[dict, dict]] = []
    unlabelled: dict[tuple, dict] = {}  # one run per knob setting without labels
    for knobs in grid:
        by_rate: dict[float, list[dict]] = {}
        for rate in rates:
            rows = by_rate.setdefault(rate, [])
            for seed in seeds:
                same = (seed, knobs)  # every knob matters without labels too
                if rate == 0 and same in unlabelled:
                    run = unlabelled[same]
                else:
                    run = run_stream(rs, seed, args, rate, out, knobs)
                if rate == 0:
                    unlabelled[same] = run
                s = summarize(rs, run, args.last)
                if rate == 0 and args.ceiling:
                    s["ceiling"] = label_free_ceiling(rs, run, args.last, knobs.family_margin,
                                                     knobs.peers)
                rows.append(s)
                if len(plotted) < 2 and seed == seeds[0] and knobs == grid[0]:
                    plotted.append((run, s))
                fb = f"feedback on {s['feedback']} calls" if rate else "no labels"
                print(f"seed {seed} ({fb}): last-{args.last} {s['evolved_acc_last']:.3f} vs best "
                      f"fixed {s['best_acc_last']:.3f} {s['best_panel']} → gap "
                      f"{s['gap_points']:+.1f}; final {s['final_panel']}; shadow calls "
                      f"{s['challenger_calls']} ({s['challenger_calls'] / s['calls']:.3f}/call, "
                      f"{s['shadow_per_decision']:.3f}/decision call, busiest 200 calls "
                      f"{s['max_window_share']:.3f}; {s['challengers_per_call_first_1000']:.2f}/call "
                      f"in the first 1,000, {s['challengers_per_call_last_1000']:.2f} in the "
                      f"last); {s['seconds']}s (estimates {s['fit_seconds']}s)", flush=True)
                if "ceiling" in s:
                    c = s["ceiling"]
                    print(f"  label-free ceiling (every model on every call): ranks "
                          f"{c['ranking']}; evolve → {c['panel']} gap {c['gap_points']:+.1f}; best "
                          f"panel with ties in that order: gap {c['best_ordered_gap_points']:+.1f}",
                          flush=True)
            gaps = [r["gap_points"] for r in rows]
            extra = sum(r["challenger_calls"] for r in rows) / sum(r["calls"] for r in rows)
            per_decision = (sum(r["challenger_calls"] for r in rows)
                            / max(1, sum(r["decision_calls"] for r in rows)))
            summary = {"knobs": knobs._asdict(), "feedback_rate": rate,
                       "mean_gap": round(float(np.mean(gaps)), 2), "worst_gap": round(max(gaps), 2),
                       "challenger_calls_per_call": round(extra, 3),
                       "shadow_calls_per_decision_call": round(per_decision, 4),
                       "busiest_200_calls": round(max(r["max_window_share"] for r in rows), 4),
                       "runs": rows}
            if rate == 0 and args.ceiling:
                ceil = [r["ceiling"]["gap_points"] for r in rows]
                best_ordered = [r["ceiling"]["best_ordered_gap_points"] for r in rows]
                summary["ceiling"] = {"mean_gap": round(float(np.mean(ceil)), 2),
                                      "worst_gap": round(max(ceil), 2),
                                      "best_ordered_mean_gap": round(float(np.mean(best_ordered)), 2)}
            report.append(summary)
            what = f"feedback {rate:.0%}" if rate else "no labels"
            print(f"== {'tune' if args.tune else 'report'} {args.ranking}, {knobs}, {what}: "
                  f"mean gap {summary['mean_gap']:+.2f}, worst {summary['worst_gap']:+.2f} points "
                  f"over {len(rows)} seeds; shadow calls {extra:.3f} per call, "
                  f"{per_decision:.3f} per decision call (busiest 200 calls "
                  f"{summary['busiest_200_calls']:.3f}; budget {args.shadow_budget:g})", flush=True)
            if "ceiling" in summary:
                c = summary["ceiling"]
                print(f"== label-free ceiling (every model on every call, no budget): mean gap "
                      f"{c['mean_gap']:+.2f}, worst {c['worst_gap']:+.2f}; the best panel whose "
                      f"ties follow the label-free ranking: mean gap "
                      f"{c['best_ordered_mean_gap']:+.2f}", flush=True)
        if 0.0 in by_rate and len(by_rate) > 1:
            rate = max(by_rate)
            pairs = [(a["gap_points"], b["gap_points"]) for a, b in zip(by_rate[0.0], by_rate[rate])]
            better = sum(fb < none for none, fb in pairs)
            not_worse = sum(fb <= none for none, fb in pairs)
            print(f"== feedback {rate:.0%} vs no labels, seed by seed: better on {better} of "
                  f"{len(pairs)}, not worse on {not_worse} "
                  f"({', '.join(f'{fb:+.1f} vs {none:+.1f}' for none, fb in pairs)})", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=str))
    print("curve:", plot(rs, [r for r, _ in plotted], [s for _, s in plotted], args.png))
    print(f"wall time {time.monotonic() - t0:.1f}s; output in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
