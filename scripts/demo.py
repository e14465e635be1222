#!/usr/bin/env python
"""`python scripts/demo.py ...` is `honestface-demo ...`, the console command of the installed package.
The flags, examples and exit codes are in honestface/apps/cli/demo.py;
this file runs from a fresh clone without installing anything."""

import sys

import _bootstrap  # noqa: F401  (puts the repository on sys.path)

from honestface.apps.cli.demo import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/demo.py"))
