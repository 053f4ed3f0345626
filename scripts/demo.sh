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

# shellcheck source=lib/venv.sh
. scripts/lib/venv.sh
ensure_venv '.[examples]' cryptography,flwr,httpx,numpy,pydantic,sklearn,typer fedattest flwr

exec .venv/bin/python examples/digits/run_demo.py "$@"
