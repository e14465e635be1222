"""Start-up of the scripts in this folder: put the repository on sys.path, so `python scripts/<name>.py` runs from a
fresh clone without `pip install` (the commands live in honestface/apps/cli/, installed as `honestface-*`)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
