#!/usr/bin/env bash
# The README's test command: create/reuse .venv, install, and run the CPU test suite (slow tests excluded).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config` or `bash scripts/test.sh -m slow`.
source "$(dirname "$0")/_venv.sh"
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec .venv/bin/python -m pytest -q "$@"
