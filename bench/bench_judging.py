"""Blind A/B judging: how often the verdict names a winner, exactly and simulated, and how fast votes are stored.

    .venv/bin/python bench/bench_judging.py [--trials 4000] [--votes 20,40,100,194,400] [--store-votes 500]

* Exact: for k ~ Binomial(n, p), the probability that the Wilson 95% interval of k/n excludes ½ (either side),
  summed from scipy's own binomtest(k, n).proportion_ci(method="wilson") — the error rate at p = 0.5 and the
  power at p = 0.6 and 0.7.
* Simulated: `preference_result` on --trials sets of n simulated votes, p(B) being B's share of the decisive
  votes (no ties, and with 30% ties counted as half), the rate at which it names a winner. With ties the rule is
  conservative (a tie adds ½ without spread).
* Store: --store-votes votes through JudgingStore.vote (one SQLite transaction each, as the app stores them).
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


def exact_rate(n: int, p: float) -> float:
    from scipy.stats import binom, binomtest

    total = 0.0
    for k in range(n + 1):
        ci = binomtest(k, n).proportion_ci(method="wilson")
        if ci.low > 0.5 or ci.high < 0.5:
            total += binom.pmf(k, n, p)
    return total


def simulated_rate(n: int, p: float, trials: int, p_tie: float, seed: int) -> float:
    from pipelines.metrics.preference import preference_result

    rng = np.random.default_rng(seed)
    found = 0
    for _ in range(trials):
        draw = rng.random(n)
        choices = np.where(draw < p_tie, "tie", np.where(draw < p_tie + (1 - p_tie) * p, "B", "A"))
        found += preference_result(choices.tolist()).better != "none"
    return found / trials


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
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--votes", default="20,40,100,194,400")
    parser.add_argument("--store-votes", type=int, default=500)
    args = parser.parse_args()
    print(f"{'votes':>6} {'p(B)':>5} {'exact':>7} {'simulated':>10} {'with 30% ties':>14}")
    for n in (int(v) for v in args.votes.split(",")):
        for p in (0.5, 0.6, 0.7):
            exact = exact_rate(n, p)
            plain = simulated_rate(n, p, args.trials, 0.0, seed=n)
            ties = simulated_rate(n, p, args.trials, 0.3, seed=n + 1)
            print(f"{n:>6} {p:>5.2f} {exact:>7.3f} {plain:>10.3f} {ties:>14.3f}")
    print(f"store: {1000 * store_speed(args.store_votes):.1f} ms per vote (vote + next view, one transaction)")


if __name__ == "__main__":
    main()
