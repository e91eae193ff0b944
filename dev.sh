#!/usr/bin/env bash
# Set-up and the two everyday jobs on a fresh Debian machine (Python 3.11):
#   ./dev.sh demo    the main job: a neighbourhood of homes, its aggregator and DSO through a day
#   ./dev.sh test    the test suite (real servers on loopback)
# Both create .venv and install what is needed; `apt-get` is used for system packages.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
# system packages the tests need: mosquitto (MQTT broker), prosody (XMPP), chromium (tests/e2e,
# driven by Playwright; no font package: Chromium's fontconfig pulls in fonts-dejavu-core)
APT_PACKAGES=(mosquitto prosody chromium)

setup() {
    if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
        missing=()
        for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
        if [ ${#missing[@]} -gt 0 ]; then
            SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
            $SUDO apt-get update -q && $SUDO apt-get install -y -q "${missing[@]}"
        fi
    fi
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # strict editable mode links files one by one so mypy and other tools see the packages
    "$VENV/bin/python" -m pip install -q -e '.[dev]' --config-settings editable_mode=strict
    "$VENV/bin/python" -m pip install -q -e firmware-sim
}

case "${1:-}" in
    demo) shift; setup; exec "$VENV/bin/homeflex" demo "$@" ;;
    test) shift; setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    lint) setup; "$VENV/bin/ruff" check . && "$VENV/bin/ruff" format --check . \
            && "$VENV/bin/mypy" common edge cloud agents pki firmware-sim/homeflex_sim ;;
    *) echo "usage: $0 demo|test|lint [args]" >&2; exit 2 ;;
esac
