"""The honest evaluation protocol every decision-quality bench shares (issue 14).

The dev replay (``../shared/data/mmlu_pro_replay``: 14 models × 5,943 questions) is split
per seed by questions **and** by models:

- questions: ``train`` 40 % / ``val`` 30 % / ``test`` 30 % (a seeded permutation);
- models: ``onboarded`` (4 of the 14, drawn with the same seed) join with observations on
  ``val`` only, like a model a user adds after the router was built; the other 10
  (``profiled``) are profiled on ``train``.

Rules: clusters are fitted on ``train`` prompts; every knob (K, smoothing, λ, thresholds,
stopping rules, …) is chosen with ``train``/``val`` data only (e.g. cross-fitting inside
them); ``test`` is used once, for the reported figures. Figures are reported over
``--seeds`` (≥ 5) seeds as mean and worst.

    from protocol import load, honest_split
    rs, correct = load()                # ReplaySet, (items × models) 0/1 array
    sp = honest_split(rs, seed)         # sp.train / sp.val / sp.test index arrays, sp.onboarded
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fscale_tui.engine.routing.mmlu import ReplaySet, load_replay_set  # noqa: E402

DEFAULT_SRC = REPO.parent / "shared" / "data" / "mmlu_pro_replay"
FRACTIONS = (0.4, 0.3, 0.3)
ONBOARDED = 4


@dataclass(frozen=True)
class Split:
    seed: int
    train: np.ndarray  # question indices
    val: np.ndarray
    test: np.ndarray
    profiled: tuple[str, ...]  # models profiled on train
    onboarded: tuple[str, ...]  # models that join with val observations only

    def observed(self, model: str) -> np.ndarray:
        """The question indices whose answers of ``model`` may be used for fitting."""
        return self.val if model in self.onboarded else self.train


def load(src: Path | str = DEFAULT_SRC) -> tuple[ReplaySet, np.ndarray]:
    """The replay set and its (items × models) correctness matrix (no answer = wrong)."""
    rs = load_replay_set(Path(src))
    gold = [t.label for t in rs.tasks]
    correct = np.array([[rs.answers[m][i] == g for m in rs.models] for i, g in enumerate(gold)],
                       dtype=float)
    return rs, correct


def honest_split(rs: ReplaySet, seed: int, *, fractions: tuple[float, float, float] = FRACTIONS,
                 onboarded: int = ONBOARDED) -> Split:
    rng = np.random.default_rng(10_000 + seed)
    n = len(rs.tasks)
    perm = rng.permutation(n)
    a = int(round(fractions[0] / sum(fractions) * n))
    b = a + int(round(fractions[1] / sum(fractions) * n))
    mperm = rng.permutation(len(rs.models))
    new = tuple(sorted(rs.models[j] for j in mperm[:onboarded]))
    return Split(seed, np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:]),
                 tuple(m for m in rs.models if m not in new), new)


def mean_worst(values: list[float], *, worst: str = "min") -> dict[str, float]:
    """``{"mean", "worst"}`` of per-seed figures (worst = min for accuracy, max for a gap)."""
    arr = np.asarray(values, dtype=float)
    return {"mean": round(float(arr.mean()), 4),
            "worst": round(float(arr.min() if worst == "min" else arr.max()), 4)}
