#!/usr/bin/env bash
# Create (or update) the project's Python 3.11 virtualenv in .venv with the exact pins of requirements.txt.
# Idempotent and fast when nothing changed: it records a hash of the requirement files and skips pip when it matches.
#   bash setup_env.sh          # runtime packages
#   bash setup_env.sh --dev    # plus test tools (requirements-dev.txt)
#   VENV=/path/to/venv bash setup_env.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
VENV="${VENV:-.venv}"
REQ=requirements.txt
[[ "${1:-}" == "--dev" ]] && REQ=requirements-dev.txt

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1) at $PYTHON); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"

stamp="$VENV/.installed-$(basename "$REQ" .txt)"
want="$(cat requirements*.txt | sha256sum | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "environment $VENV is up to date ($REQ)"
    exit 0
fi
echo "installing $REQ into $VENV (first time: a few minutes, ~3 GB)"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r "$REQ"
"$VENV/bin/python" -m pip check
echo "$want" > "$stamp"
echo "environment $VENV ready"
