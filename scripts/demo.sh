#!/usr/bin/env bash
# The README's main command: an attested Flower federation, end to end, on one machine (simulated SGX).
#
#   bash scripts/demo.sh [--out DIR] [--summary FILE]
#
# Creates .venv (python3 -m venv) if it is missing and installs fedattest with the example's extra
# (scikit-learn, for its bundled digits data: no downloads) unless that is there already. Then runs
# examples/digits/run_demo.py: a simulated SGX platform, the coordinator, three hospitals' data
# commitments, the aggregator and three collaborators as separate Flower processes over TLS, several
# rounds of training with accuracy per round, an attestation table, the attacks (changed data, an
# unattested node, outsiders on the SuperLink, an unapproved app) each refused, and the audit bundle
# verified offline. Output goes to demo-output/federation (gitignored); logs in its logs/ directory.
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

# Installed already? This checkout's package, Flower and the example's extra import, and the console
# scripts exist. Then skip pip (works offline and takes no time).
installed() {
    [ -x .venv/bin/fedattest ] && [ -x .venv/bin/flwr ] && .venv/bin/python - <<'PY' >/dev/null 2>&1
import pathlib, sys
import cryptography, flwr, httpx, numpy, pydantic, sklearn, typer  # noqa: F401
import fedattest
sys.exit(pathlib.Path(fedattest.__file__).resolve().parent != pathlib.Path("fedattest").resolve())
PY
}
if ! installed; then
    echo "== installing fedattest and the example's extra into .venv (pip install -e '.[examples]')"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[examples]'
fi

exec .venv/bin/python examples/digits/run_demo.py "$@"
