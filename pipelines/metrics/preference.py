"""Blind A/B judging by eye: the statistics of people's votes (no gradio, no storage; pure Python + numpy/scipy).

A vote says which of two images a person preferred: "A", "B", "tie" or "skip". The result is B's win rate with
ties counted as half a win for each side, and ONE test that decides the verdict: a two-way cluster-robust
t-test (Cameron, Gelbach & Miller 2011) on the votes, clustered by judge and by pair. Its interval is the set of
win rates that test does not reject, so "the interval excludes 50%" and "p < 0.05" are the same statement, and
the verdict's words name that test. With several judges it adds their agreement (Krippendorff's alpha, nominal)
and the pairs on which they disagree most.

    from pipelines.metrics import preference_result
    result = preference_result([Vote("B", pair=0, judge="ann"), Vote("A", pair=0, judge="bob"), ...])
    print(result.b_rate, result.low, result.high, result.p_value, result.verdict)

Why this test (and not a Wilson interval or a sign test on every vote): votes are not independent. The same pair
(and, with random pairs, the same image) is judged by every judge, and each judge brings a taste of their own.
With no true preference, 5 judges × 40 pairs and each pair leaning 90/10 one way or the other, pooling the votes
as if independent names a winner in about 31% of studies instead of 5%. The cluster-robust variance adds the
spread between judges and the spread between pairs (V = V_judges + V_pairs − V_votes; never below the larger one-way
term), and the t critical value uses Welch–Satterthwaite degrees of freedom from those three terms: with few judges
who disagree it falls towards judges − 1, so five judges cannot outvote the uncertainty of having asked only five
people. Each term is the cluster jackknife (CR3: Σ over clusters of (mean without the cluster − mean)²; MacKinnon,
Nielsen & Webb 2023 recommend it with few clusters) rather than CR1's G/(G − 1) factor: with 5 judges, pairs
leaning 90/10 and judges with a taste of their own, 10% ties and a third of the judges stopping half way, CR1 named a
false winner in 7.0% of 2000 simulated studies, the jackknife in 5.4%; its price is 4–7 points of power at a real
65/35 preference (bench/bench_judging.py). CR2 (Bell–McCaffrey) equals CR1 with equal clusters and barely moved that
rate; df = judges − 1 also held 6% but cost a quarter of the power where only pairs lean. A wild bootstrap over the
judges was not used: when pairs carry the spread, every judge's sum of null-imposed residuals holds the same common
shift, so its p-value can hardly fall below the chance that all judges' weights agree (reasoned, not simulated). A
floor (the variance had one vote gone the other way, 1/n²) keeps a study where every vote agrees from having zero
spread. The simulations in
tests/test_metrics_judging.py check the false-verdict rate under clustered nulls of several shapes;
bench/bench_judging.py reports the power.

Choices the sources leave open:
- Ties count half (score 0.5); skips and votes on pairs that show the same image twice are not counted.
- One vote per judge and pair: a judge (one identity: login or browser key) who opens a second session and answers
  a pair again has only the first answer counted; the repeats are reported.
- With one judge the test can cluster only by pair: the verdict is then about that judge's taste and says so.
- Stopping rule: the verdict is meant to be read once, when the owner closes the study after the planned number
  of judges. While voting is open only the owner sees the running verdict (judges never do), marked as running;
  stopping the moment it looks good raises the false-verdict rate above the 5% the test promises.
- "Votes needed" is the normal-approximation sample size for 80% power to detect a 60/40 preference with a
  two-sided 5% test if votes were independent (about 194 votes): a floor, since clustering only adds spread.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

CHOICES = ("A", "B", "tie", "skip")
COUNTED = ("A", "B", "tie")
DETECT_RATE = 0.6  # the "60/40 preference" the verdict says how many votes would detect
DETECT_POWER = 0.8
MAX_DISAGREEMENTS = 6


@dataclass(frozen=True)
class Vote:
    """One judgement: the preferred set ("A", "B", "tie" or "skip"), on which pair and by whom.

    counted=False leaves the vote out of the tally (a pair that shows the same image on both sides)."""

    choice: str
    pair: int | None = None
    judge: str = ""
    counted: bool = True

    def __post_init__(self) -> None:
        if self.choice not in CHOICES:
            raise ValueError(f"A vote is one of {', '.join(CHOICES)}; got {self.choice!r}.")


@dataclass(frozen=True)
class Tally:
    """Counted votes of one group (everyone, or one judge): B's win rate with ties as half and its interval."""

    b_wins: int
    a_wins: int
    ties: int
    skips: int = 0
    b_rate: float = math.nan  # (B + ties/2) / (A + B + ties)
    low: float = math.nan  # interval of b_rate from the cluster-robust t-test (the rates it does not reject)
    high: float = math.nan
    p_value: float = math.nan  # two-sided cluster-robust t-test of b_rate = 50%
    judges: int = 0  # distinct judges (identities) among the counted votes
    pairs: int = 0  # distinct pairs among the counted votes
    df: float = math.nan  # the t test's degrees of freedom
    repeats: int = 0  # answers to a pair the same judge had answered already (left out)

    @property
    def votes(self) -> int:
        return self.a_wins + self.b_wins + self.ties

    @property
    def better(self) -> str:
        """"B" or "A" when the test rejects 50% (the interval excludes it), else "none"."""
        if math.isfinite(self.low) and self.low > 0.5:
            return "B"
        if math.isfinite(self.high) and self.high < 0.5:
            return "A"
        return "none"


@dataclass(frozen=True)
class JudgeTally:
    judge: str
    tally: Tally


@dataclass(frozen=True)
class Agreement:
    """How far judges agree on the pairs that two or more of them answered (A, B or tie)."""

    alpha: float  # Krippendorff's alpha, nominal (NaN when every vote is the same answer)
    percent: float  # share of agreeing judge pairs, averaged over the pairs
    pairs: int  # pairs answered by 2 or more judges
    judges: int


@dataclass(frozen=True)
class Disagreement:
    """A pair on which judges split: how many chose A, B and tie."""

    pair: int
    a: int
    b: int
    ties: int
    spread: float  # 1 − (share of the most common answer): 0 when all agree

    @property
    def votes(self) -> int:
        return self.a + self.b + self.ties


@dataclass(frozen=True)
class PreferenceResult:
    """Everything the judging says: the tally, the verdict, per-judge tallies, agreement and disagreements."""

    tally: Tally
    verdict: str
    votes_needed: int  # counted votes for 80% power against a 60/40 preference
    excluded: int = 0  # votes on pairs showing the same image twice (not counted)
    confidence: float = 0.95
    judges: list[JudgeTally] = field(default_factory=list)
    agreement: Agreement | None = None
    disagreements: list[Disagreement] = field(default_factory=list)
    names: tuple[str, str] = ("", "")  # optional names of A and B, used in the verdict

    @property
    def better(self) -> str:
        return self.tally.better

    @property
    def votes(self) -> int:
        return self.tally.votes

    @property
    def b_rate(self) -> float:
        return self.tally.b_rate

    @property
    def low(self) -> float:
        return self.tally.low

    @property
    def high(self) -> float:
        return self.tally.high

    @property
    def p_value(self) -> float:
        return self.tally.p_value

    @property
    def more_votes(self) -> int:
        return max(0, self.votes_needed - self.votes)

    def metric_row(self):
        """The result as a metrics-table row (pipelines.metrics.report.MetricRow), to sit beside FID, SSIM…

        a and b are A's and B's shares of the votes (ties half each), the difference b − a = 2·rate − 1 and its
        interval is the Wilson interval mapped the same way."""
        from .report import MetricRow

        tally = self.tally
        finite = math.isfinite(tally.b_rate)
        rate = tally.b_rate if finite else None
        row = MetricRow(key="human_preference", name="Blind preference (people)",
                        definition=("share of blind votes for each set (ties count half); the interval and the "
                                    f"verdict come from one test: {verdict_test_name(tally)}, "
                                    f"{_p_text(tally.p_value)}"),
                        higher_is_better=True, a=None if rate is None else 1 - rate, b=rate,
                        difference=None if rate is None else 2 * rate - 1,
                        low=2 * tally.low - 1 if math.isfinite(tally.low) else None,
                        high=2 * tally.high - 1 if math.isfinite(tally.high) else None,
                        better=tally.better, verdict=self.verdict, paired=True, model="people")
        if math.isfinite(tally.low):
            row.a_interval, row.b_interval = (1 - tally.high, 1 - tally.low), (tally.low, tally.high)
        return row

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tally"].update(votes=self.tally.votes, better=self.tally.better)
        data["more_votes"] = self.more_votes
        return _finite(data)


# ------------------------------------------------------------------------------------------ formulas
def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (without continuity correction); successes may be x.5 (ties as
    half). (NaN, NaN) when n is 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 ≤ successes ≤ n, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def sign_test(b_wins: int, a_wins: int) -> float:
    """Two-sided exact sign test of B against A (ties already dropped): twice the smaller binomial tail at ½,
    capped at 1. NaN with no decisive vote."""
    n = int(a_wins) + int(b_wins)
    if n == 0:
        return math.nan
    from scipy.stats import binom

    k = int(b_wins)
    tail = min(binom.cdf(k, n, 0.5), binom.sf(k - 1, n, 0.5))
    return float(min(1.0, 2 * tail))


def votes_needed(rate: float = DETECT_RATE, power: float = DETECT_POWER, confidence: float = 0.95) -> int:
    """Counted votes a two-sided test at 1 − confidence needs to find a `rate` preference with `power`
    (normal approximation for one proportion against ½)."""
    if not 0 < rate < 1 or rate == 0.5:
        raise ValueError(f"rate must be in (0, 1) and not 0.5, got {rate}")
    z_alpha, z_power = _z(confidence), NormalDist().inv_cdf(power)
    n = ((z_alpha * 0.5 + z_power * math.sqrt(rate * (1 - rate))) / abs(rate - 0.5)) ** 2
    return math.ceil(n)


SCORE = {"B": 1.0, "A": 0.0, "tie": 0.5}
TEST_NAME = "two-way cluster-robust t-test (clustered by judge and by pair)"


@dataclass(frozen=True)
class ClusteredTest:
    """The cluster-robust t-test of B's win rate against 50%: estimate, standard error, df, p and interval."""

    rate: float
    se: float
    df: float
    p_value: float
    low: float
    high: float
    judges: int
    pairs: int


def _jackknife_term(index: np.ndarray, residuals: np.ndarray) -> float:
    """One clustering's variance of the mean by the cluster jackknife (CR3): Σ_g (mean without cluster g − mean)².

    For the mean that is Σ_g (S_g / (n − n_g))², S_g the cluster's sum of residuals. With G equal clusters it is
    the usual G/(G − 1) factor squared: larger than CR1 by G/(G − 1), which is what few judges need."""
    n = len(residuals)
    sums = np.bincount(index, residuals)
    others = n - np.bincount(index)
    return float(np.sum((sums / others) ** 2))


def clustered_test(scores: Sequence[float], judges: Sequence[Hashable], pairs: Sequence[Hashable],
                   confidence: float = 0.95) -> ClusteredTest:
    """Two-way cluster-robust t-test of mean(scores) = ½ (scores: 1 for B, 0 for A, ½ for a tie), clustered by
    judge and by pair (Cameron, Gelbach & Miller 2011), each one-way term the cluster jackknife (CR3), with
    Welch–Satterthwaite degrees of freedom.

    One judge: clustered by pair only (CR1: with each vote on its own pair, the one-sample t-test). The interval
    is estimate ± t·se, clipped to [0, 1]; it excludes ½ exactly when p < 1 − confidence."""
    y = np.asarray(scores, dtype=float)
    n = len(y)
    if n == 0:
        return ClusteredTest(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0)
    judge_index = np.unique(np.asarray([str(j) for j in judges]), return_inverse=True)[1]
    pair_index = np.unique(np.asarray([str(p) for p in pairs]), return_inverse=True)[1]
    n_judges, n_pairs = int(judge_index.max()) + 1, int(pair_index.max()) + 1
    rate = float(y.mean())
    residuals = y - rate
    if n_judges > 1 and n_pairs > 1:
        v_judges = _jackknife_term(judge_index, residuals)
        v_pairs = _jackknife_term(pair_index, residuals)
        v_votes = _jackknife_term(np.arange(n), residuals)
        variance = max(v_judges + v_pairs - v_votes, v_judges, v_pairs)
        terms = v_judges ** 2 / (n_judges - 1) + v_pairs ** 2 / (n_pairs - 1) + v_votes ** 2 / max(n - 1, 1)
        df = variance ** 2 / terms if terms > 0 else float(min(n_judges, n_pairs) - 1)
        df = max(df, 1.0)
    else:  # one judge (clustered by pair) or one pair judged by several people (clustered by judge): CR1
        index, clusters = (pair_index, n_pairs) if n_judges == 1 else (judge_index, n_judges)
        sums = np.bincount(index, residuals)
        variance = float(sums @ sums) / n ** 2 * (clusters / (clusters - 1) if clusters > 1 else 1.0)
        df = float(max(clusters - 1, 1))
    # Never zero spread: at least the variance of the mean had one vote gone the other way (1/n²). It binds only
    # when (nearly) every vote agrees; then a Wilson-like interval stands in for a point.
    variance = max(variance, 1 / n ** 2)
    se = math.sqrt(variance)
    from scipy.stats import t as student

    statistic = (rate - 0.5) / se
    p_value = float(min(1.0, 2 * student.sf(abs(statistic), df)))
    half = float(student.ppf(0.5 + confidence / 2, df)) * se
    return ClusteredTest(rate, se, df, p_value, max(0.0, rate - half), min(1.0, rate + half), n_judges, n_pairs)


def tally(choices: Iterable[str] | Iterable[Vote], confidence: float = 0.95) -> Tally:
    """Count "A"/"B"/"tie"/"skip" answers (or Votes), the win rate and the clustered test's interval and p.

    Plain choices count as one judge's votes on different pairs. Of a judge's answers to one pair only the first
    is counted (the rest are `repeats`)."""
    _z(confidence)
    counts: Counter = Counter()
    seen: set[tuple[str, Any]] = set()
    scores, judges, pairs = [], [], []
    repeats = 0
    for number, item in enumerate(choices):
        vote = item if isinstance(item, Vote) else Vote(item)
        if not vote.counted:
            continue
        if vote.choice == "skip":
            counts["skip"] += 1
            continue
        pair = vote.pair if vote.pair is not None else f"vote-{number}"
        if (vote.judge, pair) in seen:
            repeats += 1
            continue
        seen.add((vote.judge, pair))
        counts[vote.choice] += 1
        scores.append(SCORE[vote.choice])
        judges.append(vote.judge)
        pairs.append(pair)
    test = clustered_test(scores, judges, pairs, confidence)
    b, a, ties = counts["B"], counts["A"], counts["tie"]
    return Tally(b_wins=b, a_wins=a, ties=ties, skips=counts["skip"], b_rate=test.rate, low=test.low,
                 high=test.high, p_value=test.p_value, judges=test.judges, pairs=test.pairs, df=test.df,
                 repeats=repeats)


def krippendorff_alpha(units: Iterable[Sequence[Hashable]]) -> float:
    """Krippendorff's alpha for nominal values: one sequence of values per unit (the answers of the judges who
    answered it; missing answers simply absent). Units with fewer than two values are not pairable and ignored.
    NaN when the pairable values are all the same (no disagreement is possible to measure)."""
    coincidence: Counter = Counter()
    for values in units:
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_c - 1) if c == k else n_c * n_k
                coincidence[c, k] += pairs / (m - 1)
    totals: Counter = Counter()
    for (c, _), value in coincidence.items():
        totals[c] += value
    n = sum(totals.values())
    observed = sum(value for (c, k), value in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if n <= 1 or expected == 0:
        return math.nan
    return 1 - (n - 1) * observed / expected


def percent_agreement(units: Iterable[Sequence[Hashable]]) -> float:
    """Share of judge pairs that gave the same answer, averaged over units with 2 or more answers."""
    shares = []
    for values in units:
        m = len(values)
        if m >= 2:
            same = sum(n * (n - 1) for n in Counter(values).values())
            shares.append(same / (m * (m - 1)))
    return sum(shares) / len(shares) if shares else math.nan


# ------------------------------------------------------------------------------------------ the result
def _as_vote(item: Vote | str | dict) -> Vote:
    if isinstance(item, Vote):
        return item
    if isinstance(item, str):
        return Vote(item)
    if isinstance(item, dict):
        return Vote(choice=item["choice"], pair=item.get("pair"), judge=str(item.get("judge") or ""),
                    counted=bool(item.get("counted", True)))
    raise TypeError(f"a vote is a Vote, a dict or one of {CHOICES}; got {type(item).__name__}")


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _p_text(p: float) -> str:
    """"p = 0.035", "p < 0.001" or "p —"."""
    if not math.isfinite(p):
        return "p —"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def verdict_test_name(result_tally: Tally) -> str:
    """The words that name the test behind a tally's verdict."""
    if result_tally.judges == 1:
        return "cluster-robust t-test (one judge: clustered by pair)"
    return TEST_NAME


def _label(letter: str, names: tuple[str, str]) -> str:
    name = names[0] if letter == "A" else names[1]
    return f"{letter} ({name})" if name and name != letter else letter


def verdict_text(result_tally: Tally, needed: int, confidence: float = 0.95, names: tuple[str, str] = ("", "")) -> str:
    """One plain sentence, worded like the metric rows' verdicts, naming the one test that decides it."""
    level = f"{100 * confidence:g}%"
    t = result_tally
    if t.votes == 0:
        return (f"No verdict yet: no votes are counted. About {needed} votes (from several judges) are needed to "
                f"detect a 60/40 preference.")
    interval = f"{_percent(t.low)} to {_percent(t.high)}"
    ties = "1 tie" if t.ties == 1 else f"{t.ties} ties"
    judges = "1 judge" if t.judges == 1 else f"{t.judges} judges"
    pairs = "1 pair" if t.pairs == 1 else f"{t.pairs} pairs"
    counts = (f"B won {t.b_wins}, A won {t.a_wins}, {ties} of {t.votes} votes from {judges} on {pairs} (ties count "
              f"half): B's win rate is {_percent(t.b_rate)}")
    test = f"{verdict_test_name(t)}, {_p_text(t.p_value)}"
    one_judge = (" With one judge this is about that judge's taste, not people's in general."
                 if t.judges == 1 else "")
    if t.better != "none":
        winner = _label(t.better, names)
        return (f"{winner} is preferred: the {level} interval of B's win rate, {interval}, excludes 50% "
                f"({test}; {counts}).{one_judge}")
    if t.votes < needed:
        return (f"No clear difference yet: the {level} interval of B's win rate, {interval}, includes 50% ({test}); "
                f"about {needed - t.votes} more votes, from several judges, would be needed to detect a 60/40 "
                f"preference ({counts}).{one_judge}")
    return (f"No clear difference: the {level} interval of B's win rate, {interval}, includes 50% ({test}); with "
            f"{t.votes} votes a 60/40 preference would probably have shown, so any preference is weaker than "
            f"that ({counts}).{one_judge}")


def _agreement(votes: list[Vote]) -> tuple[Agreement | None, list[Disagreement]]:
    by_pair: dict[int, dict[str, str]] = {}
    for vote in votes:
        if vote.pair is not None and vote.counted and vote.choice in COUNTED:
            by_pair.setdefault(vote.pair, {})[vote.judge] = vote.choice  # a judge's last answer on a pair
    judges = {judge for answers in by_pair.values() for judge in answers}
    shared = {pair: list(answers.values()) for pair, answers in by_pair.items() if len(answers) >= 2}
    if len(judges) < 2 or not shared:
        return None, []
    agreement = Agreement(alpha=krippendorff_alpha(shared.values()), percent=percent_agreement(shared.values()),
                          pairs=len(shared), judges=len(judges))
    split = []
    for pair, values in shared.items():
        counts = Counter(values)
        spread = 1 - max(counts.values()) / len(values)
        if spread > 0:
            split.append(Disagreement(pair, counts["A"], counts["B"], counts["tie"], spread))
    split.sort(key=lambda d: (-d.spread, -d.votes, d.pair))
    return agreement, split[:MAX_DISAGREEMENTS]


def preference_result(votes: Iterable[Vote | str | dict], confidence: float = 0.95,
                      names: tuple[str, str] = ("", "")) -> PreferenceResult:
    """The statistics of blind votes: tally, the clustered test and its interval, verdict, per-judge tallies,
    agreement.

    votes: Vote objects, dicts with "choice" (and optionally "pair", "judge", "counted") or plain choices
    "A", "B", "tie", "skip". Votes with counted=False (identical images) are reported but not tallied."""
    items = [_as_vote(item) for item in votes]
    counted = [vote for vote in items if vote.counted]
    needed = votes_needed(confidence=confidence)
    overall = tally(counted, confidence)
    judges = sorted({vote.judge for vote in counted})
    per_judge = [JudgeTally(judge, tally([v for v in counted if v.judge == judge], confidence))
                 for judge in judges] if len(judges) > 1 else []
    agreement, disagreements = _agreement(counted)
    return PreferenceResult(tally=overall, verdict=verdict_text(overall, needed, confidence, names),
                            votes_needed=needed, excluded=len(items) - len(counted), confidence=confidence,
                            judges=per_judge, agreement=agreement, disagreements=disagreements, names=names)


def _finite(value: Any) -> Any:
    """JSON has no NaN: missing numbers become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
