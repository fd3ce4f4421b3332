"""A comparison as a recorded run: report files (CSV, JSON, charts) under outputs/metrics/ and a History entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.core import devices, settings
from pipelines.core.jobs import atomic_write_bytes
from pipelines.core.records import RunRecord, RunStore, default_store

from . import TAB, plots
from .comparison import compare
from .report import ComparisonReport


@dataclass
class ComparisonFiles:
    rows_csv: Path
    per_image_csv: Path
    json: Path
    bar_chart: Path | None
    scatter: Path | None


def _save(record: RunRecord, report: ComparisonReport) -> ComparisonFiles:
    folder = settings.outputs_dir() / "metrics"
    stem = folder / record.id
    files = ComparisonFiles(
        rows_csv=atomic_write_bytes(f"{stem}_metrics.csv", report.rows_csv().encode()),
        per_image_csv=atomic_write_bytes(f"{stem}_per_image.csv", report.per_image_csv().encode()),
        json=atomic_write_bytes(f"{stem}.json", report.to_json().encode()),
        bar_chart=None, scatter=None)
    for attribute, make in (("bar_chart", plots.bar_chart), ("scatter", plots.scatter_plot)):
        figure = make(report)
        if figure is not None:
            path = Path(f"{stem}_{attribute}.png")
            plots.save_figure(figure, path)
            setattr(files, attribute, path)
            record.outputs.append(str(path))
    return files


def run_compare(set_a, set_b, reference=None, *, store: RunStore | None = None, **options: Any
                ) -> tuple[RunRecord, ComparisonReport, ComparisonFiles]:
    """compare() recorded in History, with its CSV/JSON/charts written atomically."""
    store = store or default_store()
    params = {"set_a": _describe(set_a), "set_b": _describe(set_b), "reference": _describe(reference),
              **{key: value for key, value in options.items() if key != "callback"}}
    record = RunRecord(tab=TAB, params=params, seed=int(options.get("seed", 0)),
                       attention=devices.attention_backend())
    with store.run(record):
        with record.stage("compare"):
            report = compare(set_a, set_b, reference, **options)
        record.models = report.models
        record.device = devices.describe(devices.resolve_device(), devices.resolve_dtype(devices.resolve_device()))
        with record.stage("save"):
            files = _save(record, report)
        params.update(files={key: str(value) for key, value in vars(files).items() if value},
                      sizes=report.sizes, skipped=report.skipped)
    return record, report, files


def _describe(source: Any) -> Any:
    """What a set was, for the record: its sources (paths, run ids), not the pixels."""
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        return str(source)
    if hasattr(source, "label") and hasattr(source, "images"):
        return {"label": source.label, "images": len(source.images), "hash": source.content_hash()}
    if isinstance(source, list) and all(isinstance(item, (str, Path)) for item in source):
        return [str(item) for item in source]
    return f"{len(source)} arrays"


def rerun_comparison(params: dict[str, Any], store: RunStore) -> RunRecord:
    """History's re-run of a recorded comparison (the package registers it as this tab's re-runner)."""
    sources = [params.get(key) for key in ("set_a", "set_b", "reference")]
    if any(isinstance(source, dict) or (isinstance(source, str) and source.endswith(" arrays")) for source in sources):
        raise ValueError("This comparison was made from images in memory and cannot be re-run from History.")
    options = {key: value for key, value in params.items()
               if key in ("prompts", "pairs", "metrics", "n_bootstrap", "seed", "models")}
    return run_compare(*sources, store=store, **options)[0]
