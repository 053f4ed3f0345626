# Sourced by the demo scripts (from the repository root): make sure .venv exists and has this checkout
# of fedattest installed with what the demo needs, using only Python 3.11+ from the machine.
#
#   ensure_venv PIP_TARGET PYTHON_IMPORTS COMMAND...
#
# PIP_TARGET is what `pip install -e` gets ('.' or '.[examples]'), PYTHON_IMPORTS the modules that must
# import (comma-separated), COMMAND the console scripts that must be in .venv/bin. If all that is there
# already, pip is skipped (works offline and takes no time). With FEDATTEST_NO_INSTALL=1 nothing is ever
# created or installed: a missing or incomplete .venv is an error (the test suite runs the scripts so).

ensure_venv() {
    local target="$1" imports="$2"
    shift 2
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found: install Python 3.11 or newer" >&2
        exit 2
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: fedattest needs Python 3.11 or newer, $python is $("$python" -c 'import platform; print(platform.python_version())')" >&2
        exit 2
    fi
    if [ -n "${FEDATTEST_NO_INSTALL:-}" ]; then
        if ! _venv_has "$imports" "$@"; then
            echo "error: .venv is missing or lacks what this script needs, and FEDATTEST_NO_INSTALL is set: run 'bash scripts/test.sh' or unset it" >&2
            exit 2
        fi
        return 0
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "== creating .venv"
        if ! "$python" -m venv .venv; then
            echo "error: could not create .venv (on Debian/Ubuntu: apt install python3-venv)" >&2
            exit 2
        fi
    fi
    if ! _venv_has "$imports" "$@"; then
        echo "== installing fedattest into .venv (pip install -e '$target')"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$target"
    fi
}

# This checkout's package (not another copy) and the listed modules import, and the commands exist.
_venv_has() {
    local imports="$1" command
    shift
    for command in "$@"; do
        [ -x ".venv/bin/$command" ] || return 1
    done
    .venv/bin/python - "$imports" <<'PY' >/dev/null 2>&1
import importlib, pathlib, sys
for name in sys.argv[1].split(","):
    importlib.import_module(name.strip())
import fedattest
sys.exit(pathlib.Path(fedattest.__file__).resolve().parent != pathlib.Path("fedattest").resolve())
PY
}
