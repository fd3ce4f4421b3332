"""Shared core: settings, devices, model loading and caching, seeds, images, run records, metadata.

Nothing here imports gradio; torch and model libraries are imported inside functions.
"""
