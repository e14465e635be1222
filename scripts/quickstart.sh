#!/usr/bin/env bash
# The README's quickstart: create/reuse .venv, install, and run the library's main job on the bundled sample faces.
# Extra arguments go to scripts/quickstart.py (see `--help`).
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python scripts/quickstart.py "$@"
