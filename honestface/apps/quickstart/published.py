"""The quickstart numbers the README publishes: committed summaries, the README tables made from them, and checks.

`docs/results/quickstart_summary.json` is the `summary.json` of the default run (`bash scripts/quickstart.sh`) and
`docs/results/quickstart_seeds.json` the `seeds.json` of `scripts/quickstart.py --seeds 0,1,2`. The README holds
their tables between marker comments; `readme_tables_agree` (a test) fails when the README and the committed files
disagree, and `compare_with_published` tells a user whether their run reproduced the published table.
`publish(run_folder)` (maintainers: `scripts/quickstart.py --publish`) copies a run's files and rewrites the tables.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

__all__ = ["README", "RESULTS", "compare_with_published", "publish", "readme_block", "readme_tables_agree"]

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"
FILES = {"summary": "quickstart_summary.json", "seeds": "quickstart_seeds.json"}
BLOCK = re.compile(r"(<!-- quickstart:(summary|seeds) begin[^>]*-->\n)(.*?)(<!-- quickstart:\2 end -->)", re.DOTALL)


def _table(kind: str, data: dict[str, Any]) -> str:
    from honestface.apps.quickstart.report import markdown_table
    from honestface.apps.quickstart.seeds import markdown_seeds_table

    return markdown_table(data) if kind == "summary" else markdown_seeds_table(data)


def readme_block(kind: str, results: Path = RESULTS) -> str:
    """The README text of table `kind` ("summary" or "seeds"), made from the committed file."""
    return _table(kind, json.loads((results / FILES[kind]).read_text())) + "\n"


def readme_tables_agree(readme: Path = README, results: Path = RESULTS) -> list[str]:
    """Problems found (empty: every README table equals the one made from its committed file)."""
    text = readme.read_text()
    found = {m.group(2): m.group(3) for m in BLOCK.finditer(text)}
    problems = [f"README has no quickstart:{k} table block" for k in FILES if k not in found]
    for kind, body in found.items():
        if not (results / FILES[kind]).is_file():
            problems.append(f"{FILES[kind]} is missing from {results}")
        elif body != readme_block(kind, results):
            problems.append(f"README's quickstart:{kind} table differs from docs/results/{FILES[kind]}")
    return problems


def compare_with_published(summary: dict[str, Any], results: Path = RESULTS) -> str:
    """One line: does this run's summary reproduce the README's table (same settings) exactly?"""
    path = results / FILES["summary"]
    if not path.is_file():
        return "no published quickstart table to compare with"
    ref = json.loads(path.read_text())
    if summary.get("settings") != ref.get("settings"):
        return "settings differ from the README's run; its table is not comparable"
    if summary.get("metrics") == ref.get("metrics"):
        return "this run reproduced the README's table exactly"
    diff = [m for m in ref["metrics"] if not _close(summary["metrics"].get(m, {}), ref["metrics"][m])]
    env = "" if summary.get("environment") == ref.get("environment") else (
        f" (other software or machine: README run {ref.get('environment')}, this run {summary.get('environment')})")
    return f"this run differs from the README's table in {', '.join(diff) or 'rounding only'}{env}"


def _close(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("lq", "restored", "gain")
    return all(k in a and math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-9) for k in keys)


def publish(run: str | os.PathLike, readme: Path = README, results: Path = RESULTS) -> list[Path]:
    """Copy `run/summary.json` (a default run) or `run/seeds.json` (a multi-seed run) into `results` and rewrite
    the matching README table; returns the files written."""
    from honestface.io import atomic_write_text

    run = Path(run)
    sources = {k: run / n for k, n in (("summary", "summary.json"), ("seeds", "seeds.json")) if (run / n).is_file()}
    if not sources:
        raise FileNotFoundError(f"{run} holds neither summary.json nor seeds.json; pass a quickstart output folder")
    text = readme.read_text()
    for kind in sources:  # checked before anything is written
        if not any(m.group(2) == kind for m in BLOCK.finditer(text)):
            raise ValueError(f"{readme} has no '<!-- quickstart:{kind} begin -->' ... end block to rewrite")
    results.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, src in sources.items():
        shutil.copyfile(src, results / FILES[kind])
        written.append(results / FILES[kind])
    text = BLOCK.sub(lambda m: m.group(1) + (readme_block(m.group(2), results) if m.group(2) in sources
                                             else m.group(3)) + m.group(4), text)
    atomic_write_text(readme, text)
    return [*written, readme]
