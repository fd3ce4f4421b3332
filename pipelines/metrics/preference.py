"""Blind A/B judging by eye: the statistics of people's votes (no gradio, no storage; pure Python + scipy).

A vote says which of two images a person preferred: "A", "B", "tie" or "skip". The result is B's win rate with
ties counted as half a win for each side, its Wilson score interval, a two-sided sign test on the decisive votes
(ties dropped, as the sign test defines), and a verdict in the words the metric rows use: a winner only when the
interval excludes 50%. With several judges it adds their agreement (Krippendorff's alpha, nominal) and the
pairs on which they disagree most.

    from pipelines.metrics import preference_result
    result = preference_result(["B", "B", "A", "tie", "B"])    # or Vote(...) objects with pair and judge
    print(result.b_rate, result.low, result.high, result.p_value, result.verdict)

Choices the sources leave open:
- Ties count half in the win rate and its interval (n = A + B + ties). A tie then adds 0.5 with no spread, so the
  Wilson interval of a count with half wins is a little conservative; ties are also reported on their own.
- The verdict follows the interval (as the metric rows do); the sign test's p-value is shown beside it.
- "Votes needed" is the normal-approximation sample size for 80% power to detect a 60/40 preference with a
  two-sided 5% test (about 194 votes); the tests check it against the exact power of the Wilson rule.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

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
    low: float = math.nan  # Wilson interval of b_rate
    high: float = math.nan
    p_value: float = math.nan  # two-sided sign test on A vs B (ties dropped)

    @property
    def votes(self) -> int:
        return self.a_wins + self.b_wins + self.ties

    @property
    def better(self) -> str:
        """"B" or "A" when the interval excludes 50%, else "none"."""
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
                        definition=("share of blind votes for each set (ties count half); the interval is the "
                                    f"Wilson {100 * self.confidence:g}% interval; two-sided sign test p = "
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


def tally(choices: Iterable[str], confidence: float = 0.95) -> Tally:
    """Count "A"/"B"/"tie"/"skip" answers and compute the win rate, its interval and the sign test."""
    counts = Counter()
    for choice in choices:
        if choice not in CHOICES:
            raise ValueError(f"A vote is one of {', '.join(CHOICES)}; got {choice!r}.")
        counts[choice] += 1
    b, a, ties = counts["B"], counts["A"], counts["tie"]
    n = a + b + ties
    rate = (b + ties / 2) / n if n else math.nan
    low, high = wilson_interval(b + ties / 2, n, confidence)
    return Tally(b_wins=b, a_wins=a, ties=ties, skips=counts["skip"], b_rate=rate, low=low, high=high,
                 p_value=sign_test(b, a))


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
    if not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def _label(letter: str, names: tuple[str, str]) -> str:
    name = names[0] if letter == "A" else names[1]
    return f"{letter} ({name})" if name and name != letter else letter


def verdict_text(result_tally: Tally, needed: int, confidence: float = 0.95, names: tuple[str, str] = ("", "")) -> str:
    """One plain sentence, worded like the metric rows' verdicts: a winner only when the interval excludes 50%."""
    level = f"{100 * confidence:g}%"
    t = result_tally
    if t.votes == 0:
        return (f"No verdict yet: no votes are counted. About {needed} votes are needed to detect a 60/40 "
                f"preference.")
    interval = f"{_percent(t.low)} to {_percent(t.high)}"
    ties = "1 tie" if t.ties == 1 else f"{t.ties} ties"
    counts = (f"B won {t.b_wins}, A won {t.a_wins}, {ties} of {t.votes} votes (ties count half): "
              f"B's win rate is {_percent(t.b_rate)}; sign test p = {_p_text(t.p_value)}")
    if t.better != "none":
        winner = _label(t.better, names)
        return (f"{winner} is preferred: the interval excludes 50% (the {level} interval of B's win rate is "
                f"{interval}; {counts}).")
    if t.votes < needed:
        return (f"No clear difference yet: the {level} interval of B's win rate ({interval}) includes 50%; about "
                f"{needed - t.votes} more votes would be needed to detect a 60/40 preference ({counts}).")
    return (f"No clear difference: the {level} interval of B's win rate ({interval}) includes 50%; with "
            f"{t.votes} votes a 60/40 preference would probably have shown, so any preference is weaker than "
            f"that ({counts}).")


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
    """The statistics of blind votes: tally, Wilson interval, sign test, verdict, per-judge tallies, agreement.

    votes: Vote objects, dicts with "choice" (and optionally "pair", "judge", "counted") or plain choices
    "A", "B", "tie", "skip". Votes with counted=False (identical images) are reported but not tallied."""
    items = [_as_vote(item) for item in votes]
    counted = [vote for vote in items if vote.counted]
    needed = votes_needed(confidence=confidence)
    overall = tally((vote.choice for vote in counted), confidence)
    judges = sorted({vote.judge for vote in counted})
    per_judge = [JudgeTally(judge, tally((v.choice for v in counted if v.judge == judge), confidence))
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
