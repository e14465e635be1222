#!/usr/bin/env python
"""`python scripts/prepare_data.py ...` is `honestface-prepare ...`, the console command of the installed package.
The flags, examples and exit codes are in honestface/apps/cli/prepare.py;
this file runs from a fresh clone without installing anything."""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from honestface.apps.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main(prog="python scripts/prepare_data.py"))
