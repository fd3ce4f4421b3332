"""Run app.py while recording (and refusing) every connection or DNS lookup to a non-loopback address.

Usage: python tests/support/netguard.py LOGFILE app.py [args...]
"""

from __future__ import annotations

import ipaddress
import os
import runpy
import socket
import sys

LOG = sys.argv[1]
_real_connect, _real_connect_ex, _real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, \
    socket.getaddrinfo


def _is_local(host) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in ("localhost", "") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _record(what: str) -> None:
    with open(LOG, "a") as log:
        log.write(what + "\n")


def _guard(address) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if not _is_local(host):
        _record(f"connect {address}")
        raise ConnectionRefusedError(f"netguard: outside connection to {address} refused")


def connect(self, address):
    _guard(address)
    return _real_connect(self, address)


def connect_ex(self, address):
    _guard(address)
    return _real_connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if not _is_local(host if isinstance(host, str) else str(host)):
        _record(f"lookup {host}")
        raise socket.gaierror(f"netguard: lookup of {host} refused")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as `python app.py` would
runpy.run_path(sys.argv[0], run_name="__main__")
