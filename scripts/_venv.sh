# shellcheck shell=bash
# Sourced by scripts/demo, scripts/test and scripts/check: make sure .venv at
# the top of the repository exists and has the project and its development
# tools installed. Needs only Python 3.11+ (python3, or $PYTHON) and network
# access to PyPI. Reinstalls only when setup.cfg or requirements-dev.txt change.

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="$REPO_DIR/.venv"
VENV_PYTHON="$VENV_DIR/bin/python"

_venv_create() {
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found; install Python 3.11 or later" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: Python 3.11 or later is needed, found $("$python" --version 2>&1)" >&2
        return 1
    fi
    echo "Creating the virtualenv $VENV_DIR"
    if ! "$python" -m venv "$VENV_DIR" >/dev/null 2>&1; then
        # Debian splits ensurepip into the python3-venv package. Without it,
        # make the virtualenv bare and put pip into it with the system's pip.
        rm -rf "$VENV_DIR"
        "$python" -m venv --without-pip "$VENV_DIR"
        if "$python" -m pip --version >/dev/null 2>&1; then
            echo "ensurepip is not available: installing pip with the system's pip"
            "$python" -m pip --python "$VENV_PYTHON" install --quiet pip
        else
            false
        fi || {
            rm -rf "$VENV_DIR"
            echo "error: could not install pip into $VENV_DIR;" \
                "install python3-venv (apt-get install python3-venv) and retry" >&2
            return 1
        }
    fi
}

ensure_venv() {
    if [ ! -x "$VENV_PYTHON" ] || ! "$VENV_PYTHON" -m pip --version >/dev/null 2>&1; then
        rm -rf "$VENV_DIR"
        _venv_create || return 1
    fi
    local stamp="$VENV_DIR/.convex-requirements.sha256" wanted
    wanted="$(cd "$REPO_DIR" && cat setup.cfg requirements-dev.txt requirements-test.txt | "$VENV_PYTHON" -c \
        'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        echo "Installing the project and its development tools into .venv (first run only)"
        (cd "$REPO_DIR" && "$VENV_PYTHON" -m pip install --quiet --disable-pip-version-check \
            -r requirements-dev.txt) || return 1
        echo "$wanted" >"$stamp"
    fi
}
