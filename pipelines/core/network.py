"""Is the model hub reachable? Checked once, lazily (never at start-up), with a short timeout."""

from __future__ import annotations

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


_PROBED: dict[tuple[str, int], HubStatus] = {}  # each host is probed at most once per process


def _probe(host: str, port: int) -> HubStatus:
    if (host, port) not in _PROBED:
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
                status = HubStatus(False, f"{host} is reachable")
        except OSError as err:
            status = HubStatus(True, f"{host} cannot be reached ({err.strerror or type(err).__name__})")
        _PROBED[(host, port)] = status
    return _PROBED[(host, port)]


def _hub_address() -> tuple[str, int]:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return endpoint.hostname or "huggingface.co", endpoint.port or 443


def forget_probes() -> None:
    """Probe again on next use (tests, or after the network came back)."""
    _PROBED.clear()


def hub_status() -> HubStatus:
    """Offline when HF_HUB_OFFLINE is set (no connection attempted) or the hub does not answer."""
    if env_offline():
        return HubStatus(True, "offline mode is on (HF_HUB_OFFLINE=1)")
    return _probe(*_hub_address())


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
    return _PROBED.get(_hub_address())
