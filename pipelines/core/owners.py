"""Who a piece of work belongs to: one concept for every run record, upload, trained model and judging study.

Two modes:
* single user (run locally; the default): there is one owner, ``LOCAL``, and everything is visible, as always;
* multi-user (on a Hugging Face Space, where ``SPACE_ID`` is set, or forced with ``ASL_MULTI_USER=1``): every
  visitor is an owner — their Hugging Face login where the Space offers one, else a key their browser keeps —
  and what they make lives under their own outputs folder (``settings.outputs_dir()`` is per owner), so
  History, trained models and studies list only theirs. ``ASL_MULTI_USER=0`` forces single-user mode.

The owner of the running code is found, in order: an explicit ``acting_as(owner)`` block (tests, the CLI, a
worker thread started inside one), then the resolver the UI registered (``set_resolver``: it reads the web
request). In multi-user mode no owner is an error: nothing may fall into a folder every visitor shares.
This module imports no gradio: the UI layer hands it a resolver.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import UserError

ENV_MULTI_USER = "ASL_MULTI_USER"


@dataclass(frozen=True)
class Owner:
    """A visitor. `kind`: "local" (single-user mode), "login" (Hugging Face / basic-auth user), "browser" (a key
    the visitor's browser keeps), "session" (an API client without either: its work lasts as long as its session)."""

    kind: str
    ident: str
    display: str = ""

    @property
    def key(self) -> str:
        """A stable, file-safe id: the folder name under the outputs root and the owner stored on records."""
        if self.kind == "local":
            return "local"
        digest = hashlib.sha256(f"{self.kind}:{self.ident}".encode()).hexdigest()[:20]
        readable = re.sub(r"[^a-z0-9]+", "-", self.ident.lower())[:24].strip("-") if self.kind == "login" else ""
        return f"{self.kind}-{readable + '-' if readable else ''}{digest}"

    @property
    def anonymous(self) -> bool:
        return self.kind in ("browser", "session")

    @property
    def label(self) -> str:
        return self.display or {"local": "this computer", "browser": "this browser",
                                "session": "this session"}.get(self.kind, self.ident)


LOCAL = Owner("local", "local")

_ACTING: ContextVar[Owner | None] = ContextVar("asl_owner", default=None)
# Set once by the UI layer (tabs.owner): reads the current web request; returns None outside a request.
_RESOLVERS: list[Callable[[], Owner | None]] = []


def multi_user() -> bool:
    """Multi-user on a Space (SPACE_ID) unless ASL_MULTI_USER says otherwise."""
    value = os.environ.get(ENV_MULTI_USER, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return bool(os.environ.get("SPACE_ID"))


def set_resolver(resolver: Callable[[], Owner | None]) -> None:
    """Register how the UI finds the visitor of the current request (replaces an earlier one)."""
    _RESOLVERS[:] = [resolver]


class NoOwner(UserError):
    """Multi-user mode, and the running code belongs to no visitor."""


def current_owner() -> Owner:
    """The owner of the work being done now (LOCAL in single-user mode)."""
    if not multi_user():
        return LOCAL
    owner = _ACTING.get()
    if owner is None:
        for resolver in _RESOLVERS:
            owner = resolver()
    if owner is None:
        raise NoOwner("This server keeps each visitor's work apart, and this request came from no known visitor. "
                      "Reload the page and try again.")
    return owner


def current_visitor() -> Owner:
    """Who is at the other end of this request, in either mode (LOCAL when nobody is known): a judge's identity
    or a study's creator even on a single-user server, where current_owner() is LOCAL for everyone."""
    owner = _ACTING.get()
    if owner is None:
        for resolver in _RESOLVERS:
            owner = resolver()
    return owner or LOCAL


@contextmanager
def acting_as(owner: Owner) -> Iterator[Owner]:
    """Run a block as `owner` (tests, the CLI, or a job that outlives its request)."""
    token = _ACTING.set(owner)
    try:
        yield owner
    finally:
        _ACTING.reset(token)


def visible(record_owner: str | None, owner: Owner | None = None) -> bool:
    """Whether `owner` (default: the current one) may see something stamped with `record_owner`.

    Single-user mode sees everything; in multi-user mode only the owner's own (shipped things carry no owner
    and are listed from the assets, not through this)."""
    if not multi_user():
        return True
    owner = owner or current_owner()
    return record_owner == owner.key
