"""Metrics / A-B tab: compare two image sets with trustworthy metrics, intervals and plain verdicts."""

from __future__ import annotations

import math
from typing import Any

import gradio as gr

from pipelines.core.gpu import gpu_task

from .common import MODEL_WORK, file_input, file_paths, friendly_errors, keeps_results, progress_callback

AUTO_PAIRING = "Automatic: by file name when the names match the reference's"
PAIRING = {AUTO_PAIRING: "auto", "No pairing": None, "Pair by file name": "name", "Pair by order": "order"}
# Share of the table's width per column (TABLE_HEADERS' order): wrapped text, so the verdict is on screen with no
# sideways scrolling.
COLUMN_WIDTHS = ["9%", "6%", "6%", "6%", "10%", "6%", "6%", "28%", "8%", "15%"]
TABLE_HEADERS = ["Metric", "A", "B", "B − A", "95% interval of B − A", "Better", "Which way is better", "Verdict",
                 "Network", "Definition"]
INTRO = ("Give two sets of images (**A** and **B**) — files or a zip, or runs from History — and, if you have one, "
         "a **reference** set of real images. Then compare them **with metrics** (every number with a 95% "
         "bootstrap interval; a verdict names a winner only when the interval of the difference excludes 0) or "
         "**judge by eye**, blind, with people.")


def metric_choices() -> list[tuple[str, str]]:
    from pipelines.metrics import METRIC_INFO

    return [(info.name, key) for key, info in METRIC_INFO.items()]


def default_network(kind: str) -> str:
    from pipelines.metrics.features import default_network as default

    return default(kind)


def network_choices(kind: str) -> list[tuple[str, str]]:
    from pipelines.metrics.features import network_choices as choices

    return choices(kind)


def network_label(source: str) -> str:
    from pipelines.metrics.features import NETWORKS

    labels = {entry.source: entry.label for networks in NETWORKS.values() for entry in networks.values()}
    return labels.get(source, source)


def history_run_choices() -> list[tuple[str, str]]:
    import datetime

    from pipelines.core.records import default_store

    choices = []
    for record in default_store().list(limit=200):
        images = [path for path in record.outputs if path.lower().endswith((".png", ".jpg", ".jpeg", ".webp"))]
        if images and record.tab != "Metrics / A-B":
            when = datetime.datetime.fromtimestamp(record.created).strftime("%m-%d %H:%M")
            choices.append((f"{record.tab} · {when} · {len(images)} images · {record.id}", f"run:{record.id}"))
    return choices


def set_sources(files: Any, runs: list[str] | None, folder: str | None) -> list[str]:
    """What one set input names: uploaded files, History runs ("run:ID") and a server folder (marked as a client's
    path: read only when the host enables folder inputs)."""
    from pipelines.metrics.imagesets import server_path

    paths = file_paths(files)
    paths += list(runs or [])
    if folder and folder.strip():
        paths.append(server_path(folder))
    return paths


def readable_number(value: float | str | None, percent: bool = False) -> str:
    """A number as a person reads it: 3 significant digits and at most 4 decimals (so −6.971e-07 reads 0 and
    0.83333 reads 0.833), thousands with separators; `percent` shows a share as 83% (a difference of shares as
    percentage points). A saved report's JSON writes an infinite PSNR (identical images) as "inf"."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    if math.isinf(number):
        return "∞ (identical)"
    if math.isnan(number):
        return "—"
    if percent:
        return f"{100 * number:.0f}%".replace("-", "−")
    from pipelines.metrics.stats import readable_number as number_text

    return number_text(number)


_fmt = readable_number
PERCENT_ROWS = ("human_preference",)  # rows whose values are shares (win rates): shown as percentages


def table_row(row) -> list[str]:
    """One MetricRow as a row under TABLE_HEADERS (this tab's table and the judging results' share it)."""
    percent = row.key in PERCENT_ROWS

    def number(value):
        return readable_number(value, percent)

    interval = "—" if row.low is None else f"{number(row.low)} to {number(row.high)}"
    better = "— (test network)" if row.test_model else {"A": "A", "B": "B"}.get(row.better, "no clear difference")
    direction = "higher" if row.higher_is_better else "lower"
    network = network_label(row.model) if row.model else "none (pixels)"
    return [row.name, number(row.a), number(row.b), number(row.difference), interval, better, direction, row.verdict,
            network, row.definition]


def comparison_table_style() -> str:
    """CSS for tables marked elem_classes=["asl-results"]: fit the page's width (no sideways scrolling)."""
    return ("<style>.asl-results table { table-layout: fixed; width: 100% !important; } "
            ".asl-results td, .asl-results th { white-space: normal !important; overflow-wrap: anywhere; }</style>")


def _readable_values(values: list[Any]) -> list[Any]:
    """Per-image values rounded for reading (4 significant digits), still numbers so the columns sort."""
    return [float(f"{value:.4g}") if isinstance(value, float) and math.isfinite(value) else value
            for value in values]


def _table(report) -> list[list[str]]:
    return [table_row(row) for row in report.rows]


def _summary(report) -> str:
    lines = [f"ℹ️ {note}" for note in getattr(report, "notes", [])]
    if report.test_model:
        lines.append("⚠️ **Test networks with random weights were used for some metrics: those numbers are not real "
                     "scores** (pixel metrics such as SSIM and PSNR are real).")
    lines += [f"- {row.verdict}" for row in report.rows if row.verdict]
    if report.skipped:
        lines.append("\n**Not computed:**")
        lines += [f"- {key}: {reason}" for key, reason in report.skipped.items()]
    if report.warnings:
        lines.append("\n**Warnings:**")
        lines += [f"- {warning}" for warning in report.warnings]
    return "\n".join(lines)


@gpu_task
def run_comparison(files_a, runs_a, folder_a, files_b, runs_b, folder_b, files_ref, folder_ref, prompts_text: str,
                   pairing: str, metrics: list[str], inception: str, clip: str, lpips: str, nima: str, dino: str,
                   n_bootstrap: int, seed: int, progress=gr.Progress()):
    from pipelines.metrics import run_compare
    from pipelines.metrics.comparison import default_metrics

    set_a, set_b = set_sources(files_a, runs_a, folder_a), set_sources(files_b, runs_b, folder_b)
    reference = set_sources(files_ref, None, folder_ref) or None
    if not set_a or not set_b:
        raise ValueError("Give images for both set A and set B (files, a zip, or runs from History).")
    if not metrics:
        raise ValueError("Choose at least one metric.")
    prompts = [line.strip() for line in (prompts_text or "").splitlines() if line.strip()] or None
    chosen = None if sorted(metrics) == sorted(default_metrics()) else list(metrics)  # defaults: fit the inputs
    record, report, files = run_compare(
        set_a, set_b, reference, prompts=prompts, pairs=PAIRING.get(pairing), metrics=chosen,
        n_bootstrap=int(n_bootstrap), seed=int(seed), models={"inception": inception, "clip": clip, "lpips": lpips,
                                                                  "dino": dino, **({"nima": nima} if nima else {})},
        callback=progress_callback(progress))
    downloads = [str(path) for path in (files.rows_csv, files.per_image_csv, files.json)]
    per_image = [_readable_values([item.get(column) for column in _per_image_columns(report)])
                 for item in report.per_image]
    return (_summary(report) + f"\n\nRun `{record.id}`.", _table(report),
            str(files.bar_chart) if files.bar_chart else None, str(files.scatter) if files.scatter else None,
            gr.Dataframe(value=per_image, headers=_per_image_columns(report)), downloads)


def _per_image_columns(report) -> list[str]:
    return list(dict.fromkeys(key for item in report.per_image for key in item)) or ["set", "image"]


def _set_picker(label: str, run_choices: list[tuple[str, str]]):
    """Files or a zip, runs from History, or (when the host enables it) a folder on the server."""
    from pipelines.metrics.imagesets import folders_allowed

    with gr.Column(variant="panel"):
        gr.Markdown(f"**Set {label}**" if len(label) == 1 else f"**{label}**")
        files = file_input("Images or a zip", ("image", "zip"), multiple=True, elem_id=f"mt-files-{label[0].lower()}")
        runs = gr.Dropdown(run_choices, multiselect=True, label="…or runs from History",
                           info="Use the images of runs you made here",
                           visible=label != "Reference (real images)")
        folder = gr.Textbox(label="…or a folder on the server (admin-enabled)",
                            info="A folder of images on the server, where the host allows it",
                            visible=folders_allowed())
    return files, runs, folder


def build(tab: gr.Tab | None = None) -> None:
    from pipelines.metrics.comparison import default_metrics

    from . import metrics_judge  # the blind "Judge by eye" mode, in its own module and sub-tab

    gr.Markdown(INTRO)
    run_choices = history_run_choices()
    columns = []
    with gr.Row(equal_height=False):
        for label in ("A", "B", "Reference (real images)"):
            columns.append(_set_picker(label, run_choices))
    (files_a, runs_a, folder_a), (files_b, runs_b, folder_b), (files_ref, _, folder_ref) = columns
    with gr.Tabs():
        with gr.Tab("Compare with metrics", id="mt-metrics"):
            with gr.Accordion("Options", open=False):
                prompts = gr.Textbox(lines=3, label="Prompts for text alignment (one per image, or one for all)",
                                     info="The prompts the images were made from, to score how well they match (CLIP "
                                          "score)")
                pairing = gr.Radio(list(PAIRING), value=AUTO_PAIRING,
                                   label="Pairing with the reference (paired metrics: SSIM, PSNR, LPIPS)",
                                   info="Which reference image each image is compared with, for the scores that "
                                        "compare two pictures directly")
                metrics = gr.CheckboxGroup(metric_choices(), value=default_metrics(),
                                           label="Metrics (with no reference, the defaults become the ones that "
                                                 "need none)",
                                           info="The scores to compute; About's glossary says what each measures")
                with gr.Row():
                    inception = gr.Dropdown(network_choices("inception"), value=default_network("inception"),
                                            label="Inception network (FID, KID, IS)",
                                            info="The image network FID, KID and IS use; the real one is downloaded "
                                                 "once",
                                            elem_id="mt-inception")
                    clip = gr.Dropdown(network_choices("clip"), value=default_network("clip"),
                                       label="CLIP model",
                                       info="The network that scores text–image match and image likeness",
                                       elem_id="mt-clip")
                    lpips = gr.Dropdown(network_choices("lpips"), value=default_network("lpips"),
                                        label="LPIPS network",
                                        info="The network that judges how different two images look",
                                        elem_id="mt-lpips")
                    nima = gr.Dropdown(network_choices("nima"), value=default_network("nima"),
                                       label="NIMA model (aesthetic rating)",
                                       info="A network that rates how good a picture looks (needs a model the host "
                                            "supplies)",
                                       elem_id="mt-nima")
                    dino = gr.Dropdown(network_choices("dino"), value=default_network("dino"),
                                       label="DINO model (DINO-I)",
                                       info="The network that judges how alike two images look (DINO-I)",
                                       elem_id="mt-dino")
                with gr.Row():
                    n_bootstrap = gr.Slider(100, 5000, value=1000, step=100, label="Bootstrap resamples",
                                            info="How many times the images are resampled to get the 95% intervals; "
                                                 "more is steadier but slower")
                    seed = gr.Number(0, precision=0, label="Seed (resampling)",
                                     info="Fixes the resampling, so the intervals come out the same again")
            compare_button = gr.Button("Compare", variant="primary", elem_id="mt-run")
            summary = gr.Markdown(elem_id="mt-summary")
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Metrics", wrap=True, interactive=False,
                                 column_widths=COLUMN_WIDTHS, elem_id="mt-table",
                                 elem_classes=["asl-results"])
            with gr.Row():
                bars = gr.Image(label="A and B with 95% intervals", type="filepath", elem_id="mt-bars")
                scatter = gr.Image(label="Per-image FID vs KL (paper 000)", type="filepath", elem_id="mt-scatter")
            per_image = gr.Dataframe(label="Per-image values (click a column to sort)", interactive=False)
            downloads = gr.File(label="Downloads (CSV, JSON)", file_count="multiple")
        with gr.Tab("Judge by eye (blind)", id="mt-judge", elem_id="mt-judge-tab"):
            metrics_judge.build(tab, sets=columns)
    gr.HTML(comparison_table_style())

    compare_button.click(
        friendly_errors(run_comparison),
        inputs=[files_a, runs_a, folder_a, files_b, runs_b, folder_b, files_ref, folder_ref, prompts, pairing,
                metrics, inception, clip, lpips, nima, dino, n_bootstrap, seed],
        outputs=[summary, table, bars, scatter, per_image, downloads], api_name="compare",
        **keeps_results(summary), **MODEL_WORK)
    if tab is not None:  # runs made since start-up appear when the tab is opened
        tab.select(lambda: [gr.Dropdown(choices=history_run_choices())] * 2, outputs=[runs_a, runs_b],
                   api_visibility="private")
    from .start import offer_example  # the Start page's example fills these in and presses Compare

    offer_example(tab, "mt-run", files_a=files_a, files_b=files_b, files_reference=files_ref, metrics=metrics,
                  seed=seed, n_bootstrap=n_bootstrap)
