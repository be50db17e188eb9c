#!/usr/bin/env bash
# Create (or update) the project's Python 3.11 virtualenv in .venv with the exact pins of requirements.txt.
# Idempotent and fast when nothing changed: it records a hash of the requirement files and skips pip when it matches.
#   bash setup_env.sh          # runtime packages
#   bash setup_env.sh --dev    # plus test tools (requirements-dev.txt)
#   bash setup_env.sh --runtimes   # only the side venvs .venv-tflite-2.12 and .venv-tflite-2.17: the older TFLite
#                                  # runtimes that Flutter apps ship, for check_runtimes.py (~1.5 GB each)
#   bash setup_env.sh --gpu    # runtime packages plus TensorFlow's CUDA libraries (requirements-gpu.txt,
#                              # Linux x86_64 + NVIDIA driver; several GB). Untested here: no CI machine has a GPU
#   VENV=/path/to/venv bash setup_env.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
VENV="${VENV:-.venv}"
REQ=requirements.txt
[[ "${1:-}" == "--dev" ]] && REQ=requirements-dev.txt
[[ "${1:-}" == "--gpu" ]] && REQ=requirements-gpu.txt
case "${1:-}" in ""|--dev|--runtimes|--gpu) ;;
    *) echo "error: unknown option ${1}; use --dev, --gpu or --runtimes" >&2; exit 2;; esac

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1) at $PYTHON); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi

# install_venv VENV REQ HASHED_FILES...: create VENV and pip-install REQ unless the stamp matches the files' hash.
install_venv() {
    local venv="$1" req="$2"; shift 2
    [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
    local stamp want
    stamp="$venv/.installed-$(basename "$req" .txt)"
    want="$(cat "$@" | sha256sum | cut -c1-16)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "environment $venv is up to date ($req)"
        return 0
    fi
    echo "installing $req into $venv (first time: a few minutes)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -r "$req"
    "$venv/bin/python" -m pip check
    echo "$want" > "$stamp"
    echo "environment $venv ready"
}

if [[ "${1:-}" == "--runtimes" ]]; then
    for version in 2.12 2.17; do
        install_venv ".venv-tflite-$version" "requirements-tflite-$version.txt" "requirements-tflite-$version.txt"
    done
    exit 0
fi
install_venv "$VENV" "$REQ" requirements-dev.txt requirements.txt $([[ "$REQ" == requirements-gpu.txt ]] && echo "$REQ")
