"""Blind A/B judging: how often the verdict names a winner with no true preference, and how often it finds a real
65/35 one, under clustered votes; and how fast votes are stored.

    .venv/bin/python bench/bench_judging.py [--studies 2000] [--designs 5x40,10x40,3x20,10x20] [--store-votes 500]

Each simulated study has J judges answering the same P pairs once each. B's chance on a vote is, on the
probability scale, the preference (0.5 or 0.65) plus a shape's clustering:
* independent — nothing else;
* pairs lean — each pair leans ±0.4 at 0.5 (90/10 either way) or ±0.25 at 0.65 (90/40: still 65% on average);
* judges' taste — each judge adds N(0, 0.15²);
* mixed — both, 10% ties, and a third of the judges stop half way.
Clipped to [0.02, 0.98]. Two rules decide each study: the app's verdict (the two-way cluster-robust t-test of
pipelines.metrics.preference, each term the cluster jackknife; before that change, with CR1 terms, 5 × 40 mixed gave
7.0% false verdicts at 2000 studies) and, as the plain reference, the old rule that pooled every vote as independent
(Wilson 95% interval of the win rate, scipy's binomtest(...).proportion_ci(method="wilson")). The rate is the
share of studies with a "preferred" verdict: at 0.5 the false-verdict rate (should be ≤ 5%), at 0.65 the power.
Store: --store-votes votes through JudgingStore.vote (one SQLite transaction each, as the app stores them).
This script prints figures; it never asserts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = ("independent", "pairs lean", "judges' taste", "mixed")


def simulate(rng: np.random.Generator, judges: int, pairs: int, shape: str, preference: float):
    """(scores, judge index, pair index) of one study."""
    lean = 0.4 if preference == 0.5 else 0.25
    pair = rng.choice([-lean, lean], pairs) if shape in ("pairs lean", "mixed") else np.zeros(pairs)
    judge = rng.normal(0, 0.15, judges) if shape in ("judges' taste", "mixed") else np.zeros(judges)
    j, p = (index.ravel() for index in np.meshgrid(range(judges), range(pairs), indexing="ij"))
    p_b = np.clip(preference + pair[p] + judge[j], 0.02, 0.98)
    draw = rng.random(j.size)
    p_tie = 0.1 if shape == "mixed" else 0.0
    scores = np.where(draw < p_tie, 0.5, (draw < p_tie + (1 - p_tie) * p_b).astype(float))
    if shape == "mixed":
        stops = np.where(rng.random(judges) < 1 / 3, pairs // 2, pairs)
        keep = p < stops[j]
        scores, j, p = scores[keep], j[keep], p[keep]
    return scores, j, p


def pooled_wilson_verdict(scores: np.ndarray) -> bool:
    """The old rule: every vote independent, Wilson interval of the win rate (ties as half, rounded down)."""
    from scipy.stats import binomtest

    n = len(scores)
    ci = binomtest(int(scores.sum()), n).proportion_ci(method="wilson")
    return ci.low > 0.5 or ci.high < 0.5


def rates(judges: int, pairs: int, shape: str, preference: float, studies: int, seed: int) -> tuple[float, float]:
    from pipelines.metrics.preference import clustered_test

    rng = np.random.default_rng(seed)
    clustered = pooled = 0
    for _ in range(studies):
        scores, j, p = simulate(rng, judges, pairs, shape, preference)
        clustered += clustered_test(scores, j, p).p_value < 0.05
        pooled += pooled_wilson_verdict(scores)
    return clustered / studies, pooled / studies


def store_speed(votes: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        os.environ["ASL_OUTPUTS"] = folder
        from pipelines.metrics.judging import JudgingStore

        a = [np.full((32, 32, 3), (0, 0, i % 256), np.uint8) for i in range(40)]
        b = [np.full((32, 32, 3), (i % 256, 0, 0), np.uint8) for i in range(40)]
        store = JudgingStore()
        study = store.create_study(a, b, pair_count=votes, seed=0)
        session = store.start_session(study.id, seed=0)
        view, start = store.view(session), time.perf_counter()
        while not view.done:
            view = store.vote(session, view.position, "left")
        return (time.perf_counter() - start) / votes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--designs", default="5x40,10x40,3x20,10x20")
    parser.add_argument("--store-votes", type=int, default=500)
    args = parser.parse_args()
    print(f"{args.studies} simulated studies per row; rates of a 'preferred' verdict")
    print(f"{'judges×pairs':>12} {'shape':>14} | {'null: app':>9} {'null: pooled':>12} | "
          f"{'65/35: app':>10} {'65/35: pooled':>13}")
    for number, design in enumerate(args.designs.split(",")):
        judges, pairs = (int(value) for value in design.split("x"))
        for k, shape in enumerate(SHAPES):
            seed = 1000 * number + 10 * k
            null_app, null_pooled = rates(judges, pairs, shape, 0.5, args.studies, seed)
            power_app, power_pooled = rates(judges, pairs, shape, 0.65, args.studies, seed + 1)
            print(f"{design:>12} {shape:>14} | {null_app:>9.3f} {null_pooled:>12.3f} | {power_app:>10.3f} "
                  f"{power_pooled:>13.3f}")
    print(f"store: {1000 * store_speed(args.store_votes):.1f} ms per vote (vote + next view, one transaction)")


if __name__ == "__main__":
    main()
