"""Landmark faces tab (issue 10): a placeholder until the method lands."""

from __future__ import annotations

import gradio as gr


def build(tab: gr.Tab | None = None) -> None:
    gr.Markdown("**Landmark faces** is being built; see the README's tab table for its status.")
