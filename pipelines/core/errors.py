"""Errors whose message is written for the person using the app (no gradio, no torch: tabs import this)."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or with what this server can do (a model it cannot have): the UI shows
    the message as it is and the server log does not treat it as a bug."""
