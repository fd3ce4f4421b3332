"""Charts of a comparison: A and B per metric with 95% error bars, and seed 000's per-image FID–KL scatter."""

from __future__ import annotations

import math

from .report import ComparisonReport

COLORS = {"A": "#4C72B0", "B": "#DD8452"}


def _figure(rows: int, cols: int, width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False)


def _error(value: float, interval: tuple[float, float] | None) -> list[float]:
    if not interval:
        return [0.0, 0.0]
    return [max(value - interval[0], 0.0), max(interval[1] - value, 0.0)]


def bar_chart(report: ComparisonReport):
    """One small panel per metric (their scales differ), A and B bars with their 95% intervals."""
    rows = [row for row in report.rows if row.a is not None and row.b is not None
            and math.isfinite(row.a) and math.isfinite(row.b)]
    if not rows:
        return None
    cols = min(4, len(rows))
    fig, axes = _figure(math.ceil(len(rows) / cols), cols, 3.2 * cols, 2.8 * math.ceil(len(rows) / cols))
    for ax, row in zip(axes.flat, rows, strict=False):
        values = [row.a, row.b]
        errors = list(zip(_error(row.a, row.a_interval), _error(row.b, row.b_interval), strict=True))
        ax.bar(["A", "B"], values, color=[COLORS["A"], COLORS["B"]], yerr=errors, capsize=6)
        arrow = "↑ better" if row.higher_is_better else "↓ better"
        ax.set_title(f"{row.name} ({arrow})" + (" · TEST" if row.test_model else ""), fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def scatter_plot(report: ComparisonReport):
    """Per-image KL (x) against per-image FID (y) for A and B, with each set's mean ± 95% interval.

    As in seed 000: points nearer the lower left are closer to the reference images.
    """
    if not report.scatter:
        return None
    fig, axes = _figure(1, 1, 6.4, 4.6)
    ax = axes[0, 0]
    for label, points in report.scatter.items():
        ax.scatter(points["kl"], points["fid"], s=14, alpha=0.55, color=COLORS[label], label=f"{label} images")
    for label in report.scatter:
        kl_row = next((r for r in report.rows if r.key == "kl_per_image"), None)
        fid_row = next((r for r in report.rows if r.key == "fid_per_image"), None)
        if kl_row and fid_row:
            x, y = (kl_row.a, fid_row.a) if label == "A" else (kl_row.b, fid_row.b)
            xi, yi = (kl_row.a_interval, fid_row.a_interval) if label == "A" else (kl_row.b_interval,
                                                                                 fid_row.b_interval)
            ax.errorbar([x], [y], xerr=[[e] for e in _error(x, xi)], yerr=[[e] for e in _error(y, yi)], fmt="s",
                        markersize=9, capsize=5, color=COLORS[label], markeredgecolor="black",
                        label=f"{label} mean ± 95% CI")
    ax.set_xlabel("per-image KL to the reference class distribution (lower is closer)")
    ax.set_ylabel("per-image FID to the reference (lower is closer)")
    title = "Per-image FID vs KL (paper 000)"
    ax.set_title(title + (" · TEST NETWORK, not real scores" if report.test_model else ""), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    from pipelines.core.jobs import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
