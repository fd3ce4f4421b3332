"""The tab registry: app.py builds one gr.Tab per entry, in this order.

A tab module exposes `build(tab) -> None` (creates its components inside its gr.Tab). A tab
backed by a method names its pipeline module, whose METHOD_CARD the About tab renders.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TabSpec:
    title: str
    module: str
    pipeline: str | None = None


TABS: tuple[TabSpec, ...] = (
    TabSpec("Start here", "tabs.start"),  # first, so it is what a visitor lands on
    TabSpec("Style fine-tuning", "tabs.style_finetune", "pipelines.style_finetune"),
    TabSpec("Storyboard", "tabs.storyboard", "pipelines.storyboard"),
    TabSpec("Landmark faces", "tabs.landmark_faces", "pipelines.landmark_faces"),
    TabSpec("Single-image variation", "tabs.single_image", "pipelines.single_image"),
    TabSpec("Neural style", "tabs.neural_style", "pipelines.neural_style"),
    TabSpec("Metrics / A-B", "tabs.metrics", "pipelines.metrics"),
    TabSpec("History", "tabs.history"),
    TabSpec("About", "tabs.about"),
)


def method_pipelines() -> list[str]:
    return [tab.pipeline for tab in TABS if tab.pipeline]
