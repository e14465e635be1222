# Sourced by scripts/quickstart.sh and scripts/test.sh: create or reuse .venv and install the locked set.
# Reinstalls only when the lock files or pyproject change (a stamp holds their hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "honestface needs Python >= 3.10 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $("$PY" --version 2>&1)"
    "$PY" -m venv .venv
fi
# pip's notes about local index folders are noise here; real errors still show and still fail the script.
pip_install() { .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
STAMP=.venv/.honestface-installed
WANT="$(cat requirements.lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "[setup] installing dependencies into .venv (a few minutes the first time)"
    pip_install -r requirements.lock.txt
    pip_install --no-deps --no-build-isolation -e .
    echo "$WANT" > "$STAMP"
fi
# The editable install is what makes `import honestface` work outside the repository (notebooks, kernels).
if ! (cd / && "$ROOT/.venv/bin/python" -c "import honestface" 2>/dev/null); then
    pip_install --no-deps --no-build-isolation -e .
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
