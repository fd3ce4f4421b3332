"""Errors whose message is written for the person using the app (no gradio, no torch: tabs import this)."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or with what this server can do (a model it cannot have): the UI shows
    the message as it is and the server log does not treat it as a bug."""


class TrainingDiverged(UserError, FloatingPointError):
    """A training's loss became NaN or infinite: the person can lower the learning rate (the message says so)."""


NAME_PATTERN = r"[A-Za-z0-9_\-]{1,60}"


def checked_name(name: str, what: str = "The name") -> str:
    """A user-chosen name that becomes a folder or file name: letters, digits, - and _ only, so it can never
    reach outside its folder (no "..", no slashes)."""
    import re

    if not re.fullmatch(NAME_PATTERN, str(name)):
        raise UserError(f"{what} must be 1–60 letters, digits, - or _ (it names the output files), got {name!r}.")
    return str(name)
