"""Visitors in the browser: who sent a request (core/owners.py decides what that means), and the app-wide
pieces that make ownership hold on a shared server.

* A visitor is their Hugging Face login (a Space with `hf_oauth: true` shows a login button) or basic-auth
  user, else a key their browser keeps (gr.BrowserState, in localStorage, encrypted with a secret this server
  keeps under its outputs root so it survives restarts), else — an API client that never loaded the page — its
  session. `install(demo)` registers the browser's key once per page load, before the page's other load events.
* Lists of owned things (trained models, runs, studies) are refreshed for the visitor when the page loads:
  a tab calls `owned_list(component, choices_fn)` for each such dropdown.
* One visitor cannot fill the queue: their model jobs waiting or running are counted when a job is queued.
* Files: Gradio serves only what an event returned (from its cache) and `allowed_paths`; the outputs folder is
  never served (`OutputsGuard` answers 403 for it even where it must sit in allowed_paths).
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core import owners, quotas, settings

BROWSER_STORAGE_KEY = "anime-style-lab-visitor"
MAX_SESSIONS = 10_000  # page sessions remembered (oldest forgotten first); a forgotten one registers again


class SessionKeys:
    """session hash -> the browser key its page registered. Held by the app (one per Blocks), not a module."""

    def __init__(self) -> None:
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, session_hash: str, key: str) -> None:
        with self._lock:
            self._keys[session_hash] = key
            self._keys.move_to_end(session_hash)
            while len(self._keys) > MAX_SESSIONS:
                self._keys.popitem(last=False)

    def get(self, session_hash: str | None) -> str | None:
        with self._lock:
            return self._keys.get(session_hash) if session_hash else None


def login_name(request: Any) -> str | None:
    """The Hugging Face login (OAuth) or basic-auth user of a request, if any."""
    if getattr(request, "username", None):
        return str(request.username)
    try:
        info = request.session.get("oauth_info") or {}  # only where the Space enabled HF OAuth
    except (AttributeError, AssertionError, KeyError):
        return None
    name = (info.get("userinfo") or {}).get("preferred_username")
    return str(name) if name else None


def owner_of(request: Any, keys: SessionKeys) -> owners.Owner | None:
    if request is None:
        return None
    if name := login_name(request):
        return owners.Owner("login", name, display=name)
    session = getattr(request, "session_hash", None)
    if key := keys.get(session):
        return owners.Owner("browser", key)
    return owners.Owner("session", session) if session else None


def _request_resolver(keys: SessionKeys) -> Callable[[], owners.Owner | None]:
    def resolve() -> owners.Owner | None:
        from gradio.context import LocalContext

        return owner_of(LocalContext.request.get(None), keys)

    return resolve


def _valid_key(value: Any) -> bool:
    return isinstance(value, str) and 20 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum()


def _browser_secret() -> str:
    """The secret BrowserState encrypts the key with: kept under the outputs root, so keys survive restarts."""
    path = settings.outputs_root() / ".browser-state-secret"
    if not path.exists():
        from pipelines.core.jobs import atomic_write_bytes

        atomic_write_bytes(path, secrets.token_urlsafe(24).encode())
        path.chmod(0o600)
    return path.read_text().strip()


# ----------------------------------------------------------------------------------------------- owned lists
_OWNED_LISTS: list[tuple[gr.components.Component, Callable[[], Any]]] = []
_OWNED_LOCK = threading.Lock()


def owned_list(component: gr.components.Component, choices: Callable[[], Any]) -> gr.components.Component:
    """Refresh `component`'s choices with `choices()` for each visitor when the page loads (their trained models,
    runs or studies); at build time there is no visitor, so it starts with the shared entries only."""
    with _OWNED_LOCK:
        _OWNED_LISTS.append((component, choices))
    return component


def _refresh_owned(entries: list[tuple[gr.components.Component, Callable[[], Any]]]) -> Callable[[], list[Any]]:
    def refresh() -> list[Any]:
        updates = []
        for component, choices in entries:
            try:
                values = choices()
            except Exception:  # noqa: BLE001 - one list that cannot be read leaves the others refreshed
                updates.append(gr.skip())
                continue
            updates.append(gr.update(choices=values) if isinstance(component, gr.Dropdown) else values)
        return updates

    return refresh


# ------------------------------------------------------------------------------------------- the queue limit
def _limit_queue_per_visitor(demo: gr.Blocks, keys: SessionKeys) -> None:
    """Wrap the queue's push (Gradio has no per-session limit): a visitor's model jobs waiting or running are
    counted when another is queued, and one past the limit is refused with a plain message (HTTP 400 with
    the message as its detail, which the page shows; a 503 would show Gradio's generic "busy" text)."""
    queue = demo._queue
    push = queue.push

    def visitor_of_event(session_hash: str | None, username: str | None) -> str | None:
        if username:
            return f"login:{username}"
        key = keys.get(session_hash)
        return f"browser:{key}" if key else f"session:{session_hash}"

    @functools.wraps(push)
    async def limited_push(body: Any, request: Any, username: str | None):
        if owners.multi_user() and body.fn_index is not None:
            fn = demo.fns.get(body.fn_index)
            if fn is not None and fn.concurrency_id == "model":
                me = visitor_of_event(body.session_hash, username)
                waiting = sum(1 for event_queue in queue.event_queue_per_concurrency_id.values()
                              for event in event_queue.queue
                              if event.fn.concurrency_id == "model"
                              and visitor_of_event(event.session_hash, event.username) == me)
                waiting += sum(1 for job in queue.active_jobs if job for event in job
                               if event.fn.concurrency_id == "model"
                               and visitor_of_event(event.session_hash, event.username) == me)
                if message := quotas.queue_refusal(waiting):
                    return False, message, "error"
        return await push(body, request, username)

    queue.push = limited_push


# ------------------------------------------------------------------------------------------- outputs guard
class OutputsGuard:
    """ASGI middleware: 403 for any file URL that points into the outputs root (records, studies, uploads,
    trained models), whatever allowed_paths says. Files an event returned are served from Gradio's cache."""

    def __init__(self, app: Any, root: Path) -> None:
        self.app, self.root = app, root.resolve()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and self._points_into_outputs(scope.get("path", "")):
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"File not allowed."})
            return
        await self.app(scope, receive, send)

    def _points_into_outputs(self, url_path: str) -> bool:
        from urllib.parse import unquote

        marker = "/file="
        if marker not in url_path:
            return False
        target = unquote(url_path.split(marker, 1)[1])
        try:
            resolved = Path(target).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return True
        return resolved.is_relative_to(self.root)


def launch_options() -> dict[str, Any]:
    """allowed_paths and middleware for demo.launch(): static assets only; the outputs root never by URL."""
    import tempfile

    from starlette.middleware import Middleware

    root = settings.outputs_root().resolve()
    assets = Path(__file__).resolve().parent.parent / "assets"
    allowed = [str(assets)]
    # Gradio copies a returned file into its cache only from cwd, the temp dir or allowed_paths: an outputs root
    # elsewhere (a Space's /data) must be listed so results can be returned; the guard still refuses its URLs.
    if not (root.is_relative_to(Path.cwd().resolve()) or root.is_relative_to(Path(tempfile.gettempdir()).resolve())):
        allowed.append(str(root))
    return {"allowed_paths": allowed, "app_kwargs": {"middleware": [Middleware(OutputsGuard, root=root)]}}


# ---------------------------------------------------------------------------------------------------- install
_EXPIRY_EVERY_S = 3600.0


def install(demo: gr.Blocks) -> None:
    """Inside `with demo:` after the tabs are built: the browser key, the owned lists' refresh, the login button
    where the Space offers HF login, the queue limit (applied when the queue exists: call `after_queue`)."""
    import os

    keys = SessionKeys()
    owners.set_resolver(_request_resolver(keys))
    demo.asl_session_keys = keys  # type: ignore[attr-defined]
    browser_key = gr.BrowserState(None, storage_key=BROWSER_STORAGE_KEY, secret=_browser_secret())
    if os.environ.get("OAUTH_CLIENT_ID"):  # set by a Space whose README has hf_oauth: true
        gr.LoginButton()
    last_expiry = [0.0]

    def register(key: Any, request: gr.Request) -> str:
        key = key if _valid_key(key) else secrets.token_urlsafe(24)
        keys.remember(request.session_hash, key)
        if owners.multi_user() and time.time() - last_expiry[0] > _EXPIRY_EVERY_S:
            last_expiry[0] = time.time()
            # walks every visitor's folder: off the page load's path, so no page waits for it
            threading.Thread(target=quotas.expire_anonymous, name="expire-anonymous", daemon=True).start()
        return key

    with _OWNED_LOCK:
        entries = list(_OWNED_LISTS)
        _OWNED_LISTS.clear()
    loaded = demo.load(register, inputs=browser_key, outputs=browser_key, api_visibility="private", queue=False)
    if entries:
        loaded.then(_refresh_owned(entries), outputs=[component for component, _ in entries],
                    api_visibility="private", queue=False)
    demo.asl_visitor_loaded = loaded  # type: ignore[attr-defined]  # app.py chains the banner after it


def after_queue(demo: gr.Blocks) -> None:
    _limit_queue_per_visitor(demo, demo.asl_session_keys)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ the storage limit
def _with_storage_check(fn: Callable) -> Callable:
    """`fn` first checks that the visitor has room left for what it will save (quotas.check_storage)."""
    import inspect

    from .common import friendly_errors

    refuse_when_full = friendly_errors(quotas.check_storage)  # its UserError becomes the page's gr.Error

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any):
            refuse_when_full()
            yield from fn(*args, **kwargs)

        return generator

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any):
        refuse_when_full()
        return fn(*args, **kwargs)

    return plain


def check_storage_before_model_work(demo: gr.Blocks) -> None:
    """Every model job (the shared "model" slot) checks the visitor's storage first (multi-user only)."""
    for block_fn in demo.fns.values():
        if block_fn.concurrency_id == "model" and block_fn.fn is not None:
            block_fn.fn = _with_storage_check(block_fn.fn)


def banner_lines() -> list[str]:
    """What the status banner says about this server's mode and storage."""
    from pipelines.core import records

    lines = [f"⚠️ {note}" for note in records.SET_ASIDE]
    if owners.multi_user():
        import os

        who = owners.current_visitor()
        lines.append(f"Your work here is private to {who.label}; "
                     + ("log in to keep it across browsers." if who.anonymous and os.environ.get("OAUTH_CLIENT_ID")
                        else "share a run from History to show it to others."))
        if os.environ.get("SPACE_ID") and settings.persistent_storage() is None:
            lines.append("This Space has no persistent storage: results vanish when it restarts.")
    return lines
