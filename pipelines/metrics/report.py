"""What a comparison returns: the table rows, per-image values, warnings, plot data; CSV and JSON forms."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

TEST_NETWORK_NOTE = "test network (random weights): not a real score"


@dataclass
class MetricRow:
    key: str
    name: str
    definition: str
    higher_is_better: bool
    a: float | None
    b: float | None
    difference: float | None = None  # b − a
    low: float | None = None  # 95% CI of the difference
    high: float | None = None
    better: str = "none"  # "A", "B" or "none" (the interval includes 0, or nothing to compare)
    verdict: str = ""
    a_interval: tuple[float, float] | None = None  # 95% CI of A's value
    b_interval: tuple[float, float] | None = None
    paired: bool = False
    model: str = ""  # the network behind it ("" for pixel metrics)
    test_model: bool = False


@dataclass
class ComparisonReport:
    rows: list[MetricRow]
    per_image: list[dict[str, Any]]  # one dict per image: set, name, then one value per per-image metric
    warnings: list[str]
    skipped: dict[str, str]  # metric key -> why it was not computed ("needs model X: reason")
    scatter: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # set -> {"kl": [...], "fid": [...]}
    sizes: dict[str, int] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the defaults chose (pairing, metrics) and why

    @property
    def test_model(self) -> bool:
        return any(row.test_model for row in self.rows)

    def row(self, key: str) -> MetricRow:
        return next(row for row in self.rows if row.key == key)

    def to_json(self) -> str:
        return json.dumps(_finite(asdict(self)), indent=2)

    def rows_csv(self) -> str:
        columns = ["key", "name", "a", "b", "difference", "low", "high", "better", "higher_is_better", "paired",
                   "model", "test_model", "verdict", "definition"]
        return _csv(columns, [asdict(row) for row in self.rows])

    def per_image_csv(self) -> str:
        columns = list(dict.fromkeys(key for item in self.per_image for key in item))
        return _csv(columns, self.per_image)


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _finite(value: Any) -> Any:
    """JSON has no inf/NaN: PSNR of identical images is +inf, written as the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
