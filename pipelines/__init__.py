"""Anime Style Lab pipelines: one module per method plus the shared core.

Importable and testable without gradio. Heavy libraries (torch, diffusers, transformers) are imported
inside functions so that importing a pipeline module to read its method card stays cheap.
"""
