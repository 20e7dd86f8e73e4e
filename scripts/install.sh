#!/usr/bin/env bash
# Installs ivr into ./.venv (Debian 12's system Python refuses pip installs: PEP 668), with the extras named in
# IVR_EXTRAS (default "fast": uvloop). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "installing python3-venv (Debian)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${IVR_EXTRAS:-fast}]"
echo "installed: $(.venv/bin/ivr version) in $(pwd)/.venv" >&2
