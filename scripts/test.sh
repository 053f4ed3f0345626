#!/usr/bin/env bash
# Lint, type-check and run the whole test suite. Creates .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The status page's test drives a real headless Chromium (Debian's; Playwright's own download is never used).
# Installed here when missing and this machine lets us; otherwise that test skips, saying why.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Chromium for the status page's browser test (apt-get install chromium)"
    { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } \
        || echo "warning: Chromium could not be installed: the browser test will skip" >&2
fi
echo "== ruff"
.venv/bin/ruff check fedattest tests benchmarks examples
echo "== mypy (strict)"
.venv/bin/mypy
echo "== pytest"
# worksteal: a worker that runs out of tests takes pending ones from the other, so the whole federations (a minute
# or two each) do not queue up on one worker at the end while the other idles.
.venv/bin/pytest -n 2 --dist worksteal "$@"
