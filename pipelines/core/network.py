"""Is the model hub reachable? Checked once, lazily (never at start-up), with a short timeout."""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 1.5
_TRUTHY = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HubStatus:
    offline: bool
    reason: str


def env_offline() -> bool:
    """True when the user switched the app offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(name, "").lower() in _TRUTHY for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.cache
def _probe(host: str, port: int) -> HubStatus:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return HubStatus(False, f"{host} is reachable")
    except OSError as err:
        return HubStatus(True, f"{host} cannot be reached ({err.strerror or type(err).__name__})")


def hub_status() -> HubStatus:
    """Offline when HF_HUB_OFFLINE is set (no connection attempted) or the hub does not answer."""
    if env_offline():
        return HubStatus(True, "offline mode is on (HF_HUB_OFFLINE=1)")
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return _probe(endpoint.hostname or "huggingface.co", endpoint.port or 443)


def url_status(url: str) -> HubStatus:
    """Whether the host of a download `url` can be used now: offline when switched off, else probed once."""
    if env_offline():
        return hub_status()
    parsed = urlparse(url)
    return _probe(parsed.hostname or "", parsed.port or 443)


def known_offline() -> HubStatus | None:
    """The status if it is already known without a network call (env flag or an earlier probe)."""
    if env_offline():
        return hub_status()
    if _probe.cache_info().currsize:
        return hub_status()
    return None
