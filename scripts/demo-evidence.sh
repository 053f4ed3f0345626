#!/usr/bin/env bash
# The evidence demo (simulated and real SGX quotes verified), on a fresh machine with only Python 3.11+.
#
#   bash scripts/demo-evidence.sh [--out DIR] [--vectors DIR]
#
# Creates .venv (python3 -m venv) if it is missing, installs fedattest into it (pip install -e .,
# runtime dependencies only) unless this checkout is already installed there, then runs
# `fedattest demo`: a simulated SGX platform quotes a workload that is verified and appraised (and
# refused without --allow-simulation), then the real hardware quotes in tests/vectors/dcap are
# verified at their recorded times and shown in one verdict table. Files go to demo-output/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/venv.sh
. scripts/lib/venv.sh
ensure_venv . cryptography,httpx,pydantic,rich,typer fedattest

exec .venv/bin/fedattest demo "$@"
