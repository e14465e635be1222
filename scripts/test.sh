#!/usr/bin/env bash
# The README's test command: create/reuse .venv, install, and run the CPU test suite (slow tests excluded).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k config` or `bash scripts/test.sh -m slow`.
source "$(dirname "$0")/_venv.sh"
if [ "$#" -eq 0 ]; then
    set -- -m "not slow"
    # the whole suite runs on one pytest-xdist worker per core, at most HONESTFACE_TEST_WORKERS (default 2: each
    # worker can hold a few GiB); tests/conftest.py keeps each worker to one thread. Files stay whole on one worker.
    workers="$(nproc 2>/dev/null || echo 1)"
    max="${HONESTFACE_TEST_WORKERS:-2}"
    [ "$workers" -gt "$max" ] && workers="$max"
    if [ "$workers" -gt 1 ]; then set -- "$@" -n "$workers" --dist loadfile; fi
fi
exec .venv/bin/python -m pytest -q "$@"
