#!/usr/bin/env bash
# Installs what the tests need on a fresh machine (virtual env, Python packages, Debian chromium for the
# browser test) and runs the whole test suite. The README's test command; CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium >/dev/null
fi
[ -x .venv/bin/python ] || python3.11 -m venv .venv
.venv/bin/pip install -q -r requirements-dev.txt

export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
