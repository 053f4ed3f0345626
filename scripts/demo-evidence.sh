#!/usr/bin/env bash
# The evidence demo (simulated and real SGX quotes verified), on a fresh machine with only Python 3.11+.
#
#   bash scripts/demo-evidence.sh [--out DIR] [--vectors DIR]
#
# Creates .venv (python3 -m venv) if it is missing, installs fedattest into it (pip install -e .,
# runtime dependencies only) unless this checkout is already installed there, then runs
# `fedattest demo`: a simulated SGX platform quotes a workload that is verified and appraised (and
# refused without --allow-simulation), then the real hardware quotes in ../shared/testvectors/dcap are
# verified at their recorded times and shown in one verdict table. Files go to demo-output/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found: install Python 3.11 or newer" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: fedattest needs Python 3.11 or newer, $PYTHON is $("$PYTHON" -c 'import platform; print(platform.python_version())')" >&2
    exit 2
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    if ! "$PYTHON" -m venv .venv; then
        echo "error: could not create .venv (on Debian/Ubuntu: apt install python3-venv)" >&2
        exit 2
    fi
fi

# Installed already? This checkout's package and its runtime dependencies import, and the console
# script exists. Then skip pip (works offline and takes no time).
installed() {
    [ -x .venv/bin/fedattest ] && .venv/bin/python - <<'PY' >/dev/null 2>&1
import pathlib, sys
import cryptography, httpx, pydantic, rich, typer  # noqa: F401
import fedattest
sys.exit(pathlib.Path(fedattest.__file__).resolve().parent != pathlib.Path("fedattest").resolve())
PY
}
if ! installed; then
    echo "== installing fedattest into .venv (pip install -e .)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
fi

exec .venv/bin/fedattest demo "$@"
