"""UI helpers shared by every tab: plain error messages, the status banner, model labels."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from pipelines.core.errors import UserError
from pipelines.core.jobs import JobCancelled

log = logging.getLogger(__name__)

# Every event that runs a model shares this concurrency slot: one model job at a time on the device.
MODEL_WORK = {"concurrency_id": "model", "concurrency_limit": 1}

# Errors whose text is for the user (the pipelines' own and the plain ones raised for bad input); any other is
# logged and summarised.
USER_ERRORS = (UserError, ValueError, KeyError, FileNotFoundError)


def _meant_for_user(err: BaseException) -> bool:
    """The pipelines' own errors and plain ValueError/KeyError/FileNotFoundError; subclasses of those from
    libraries (numpy's LinAlgError, JSONDecodeError, …) are bugs to log even though their text is shown."""
    return isinstance(err, UserError) or type(err) in USER_ERRORS


def user_message(err: BaseException) -> str:
    if isinstance(err, USER_ERRORS):
        text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        return str(text)
    return (f"Something went wrong ({type(err).__name__}: {err}). The app is still running; "
            "the details are in the server log.")


def friendly_errors(fn: Callable) -> Callable:
    """Turn exceptions into a gr.Error with a plain message (never a stack trace in the page)."""

    def handle(err: Exception) -> None:
        if isinstance(err, JobCancelled):
            raise gr.Error(f"{err} Work done so far is kept; press the button again to resume.")
        if isinstance(err, gr.Error):
            raise err
        if not _meant_for_user(err):
            log.exception("Unexpected error in %s", fn.__name__)
        raise gr.Error(user_message(err)) from err

    if _is_generator(fn):
        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - every error must reach the user as text
                handle(err)

        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            handle(err)

    return wrapper


def _is_generator(fn: Callable) -> bool:
    import inspect

    return inspect.isgeneratorfunction(fn)


def status_banner_markdown() -> str:
    """Which models cannot be had and why (offline hub, missing downloads); empty when all is well.

    Each method pipeline may declare `unavailable_models() -> list[tuple[str, str]]` (name, reason).
    """
    from pipelines.core import network

    from . import method_pipelines

    status = network.known_offline()
    lines = []
    if status is not None and status.offline:
        lines.append(f"**Offline:** {status.reason}. Only models already on this machine can be used; "
                     "the *tiny (test, random weights)* models always work but produce noise.")
    for module_name in method_pipelines():
        module = importlib.import_module(module_name)
        for name, reason in getattr(module, "unavailable_models", lambda: [])():
            lines.append(f"- **{name}** cannot be used: {reason}")
    return "\n".join(lines)


def test_model_note(is_test: bool, reason: str | None = None) -> str:
    """The warning every result made with a test model carries on the page ("" for real models)."""
    from pipelines.core.loader import TEST_MODEL_LABEL

    if not is_test:
        return ""
    return f"⚠️ This used a test model — {reason}." if reason else f"⚠️ This used a {TEST_MODEL_LABEL}."
