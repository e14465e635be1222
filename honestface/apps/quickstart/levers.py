"""Choosing the small-scale recipe on a validation split, never on the quickstart's held-out test people.

Issue 18 asks which changes to the small-scale recipe make the method's own claims (landmarks, identity) hold on
held-out people. Picking them by the test table would fit the test faces, so every candidate ("lever") is trained
and scored on a third split: the two test people (`DEFAULT_TEST_IDENTITIES`) are left out of the data entirely,
two other people (`VALIDATION_IDENTITIES`, one face of the t1 group photo and one single-portrait face, like the
test pair) are held out and restored with their references, and the remaining five people train the recipe.

`run_levers(output, names)` runs the base recipe into `output/base`, then each lever into `output/<lever>`, and
writes `output/levers.json` and `output/levers.md`: per lever and metric the validation gain over the LQ input with
its bootstrap 95% interval, faces better and the verdict (`honestface.metrics.uncertainty`), plus the minutes of
this invocation and the generator stage's training minutes (from its logged step times, also for resumed levers).

Our choice, to fit the time: levers that change only the generator stage reuse the base run's VAE and VRE exports;
levers that change the data (flips, more views) reuse them too (the VAE and VRE see the base data), so they test
the generator stage's response to the data. `benchmarks/quickstart_levers.py` prints the same as JSON; the
measured table is in docs/architecture.md ("Small-scale recipe: levers").
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from honestface.io import atomic_write_text

__all__ = ["LEVERS", "LEVERS_STAMP", "VALIDATION_IDENTITIES", "VALIDATION_VIEWS", "markdown_levers_table",
           "run_levers"]

LEVERS_STAMP = "quickstart_levers.json"
VALIDATION_IDENTITIES = ("group_t1_1", "grace_hopper_0")
VALIDATION_VIEWS = 8  # views per validation person: 16 faces, twice the test set, for tighter intervals
LEVER_METRICS = ("psnr", "ssim", "lmd_dlib68", "ald", "ald_e", "ald_m", "ids_dlib")

# name -> run_quickstart keyword changes (`overrides`: config items per recipe stage)
LEVERS: dict[str, dict[str, Any]] = {
    "base": {},
    "ema": {"overrides": {"honestface": ["train.ema_decay=0.99"]}},
    "mfa_lips": {"overrides": {"honestface": ["loss.mfa_region_weights.lips=2.0"]}},
    "mfa_1": {"overrides": {"honestface": ["loss.mfa=1.0"]}},
    "flip": {"flip": True},
    "views_48": {"train_views": 48},
    "long": {"steps": 400, "overrides": {"honestface": ["train.disc_start_step=200"]}},  # the 400-step recipe, the default until 2026-12-06
}
_REUSED = ("vae", "vre")  # stages every lever takes from the base run


def _reuse_base_stages(base: Path, lever: Path) -> None:
    """Copy the base run's finished VAE and VRE exports into a lever's run folder (the recipe then skips them)."""
    from honestface.apps.quickstart.run import STAMP

    lever.mkdir(parents=True, exist_ok=True)
    if not (lever / STAMP).is_file():  # mark the folder as a quickstart's (run_quickstart rewrites the stamp)
        atomic_write_text(lever / STAMP, "{}")
    for stage in _REUSED:
        src, dst = base / "runs" / stage / "final", lever / "runs" / stage / "final"
        if not (src / "training.json").is_file():
            raise FileNotFoundError(f"the base run has no finished {stage} stage at {src}")
        if not (dst / "training.json").is_file():
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst)


def _generator_minutes(run: Path) -> float | None:
    """Training minutes of the lever's generator stage from its logged step times (median s/step x steps), so a
    lever resumed from an earlier invocation still reports what its training cost."""
    import statistics

    from honestface.apps.quickstart.report import read_scalars

    stage = run / "runs" / "honestface"
    step_s = [v for _, v in read_scalars(stage).get("perf/step_s", [])]
    done = json.loads((stage / "final" / "training.json").read_text()).get("step") if (
        stage / "final" / "training.json").is_file() else None
    return round(statistics.median(step_s) * done / 60, 2) if step_s and done else None


def _lever_row(summary: dict[str, Any], minutes: float, run: Path) -> dict[str, Any]:
    keys = ("lq", "restored", "gain", "ci_low", "ci_high", "faces_better", "faces", "verdict")
    return {"minutes": round(minutes, 2), "generator_minutes": _generator_minutes(run),
            "metrics": {m: {k: r[k] for k in keys} for m, r in summary["metrics"].items() if m in LEVER_METRICS}}


def run_levers(output: str | os.PathLike, names: Sequence[str] = tuple(LEVERS), seed: int = 0,
               progress: Callable[[str], None] | None = print, **settings: Any) -> dict[str, Any]:
    """Validation runs of the base recipe and each named lever (see the module docstring); returns levers.json.

    settings: other `run_quickstart` keyword arguments (steps, device, ...), the same for every lever.
    """
    from honestface.apps.quickstart.run import check_output_folder, run_quickstart
    from honestface.data.sample_dataset import DEFAULT_TEST_IDENTITIES

    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        raise ValueError(f"unknown lever {unknown[0]!r}; allowed: {', '.join(LEVERS)}")
    out = Path(output)
    check_output_folder(out, LEVERS_STAMP)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / LEVERS_STAMP, json.dumps({"levers": list(names), "seed": seed, **settings}, indent=1,
                                                     default=str))
    common = {"seed": seed, "test_identities": VALIDATION_IDENTITIES, "exclude_identities": DEFAULT_TEST_IDENTITIES,
              "test_views": VALIDATION_VIEWS, "progress": progress, **settings}
    rows = {}
    for name in ["base", *[n for n in names if n != "base"]]:
        t0 = time.perf_counter()
        if name != "base":
            _reuse_base_stages(out / "base", out / name)
        if progress:
            progress(f"[levers] {name}")
        result = run_quickstart(out / name, **{**common, **LEVERS[name]})  # a lever's value wins (e.g. steps)
        rows[name] = {"changes": LEVERS[name], **_lever_row(result.summary, (time.perf_counter() - t0) / 60,
                                                             out / name)}
    first = json.loads((out / "base" / "summary.json").read_text())
    table = {"seed": seed, "validation_identities": list(VALIDATION_IDENTITIES),
             "train_identities": first["train_identities"], "settings": first["settings"], "levers": rows}
    atomic_write_text(out / "levers.json", json.dumps(table, indent=1))
    atomic_write_text(out / "levers.md", markdown_levers_table(table))
    return table


def markdown_levers_table(table: dict[str, Any]) -> str:
    """levers.json -> a Markdown table: one row per lever, per metric the gain [95% interval] and faces better."""
    from honestface.apps.quickstart.report import format_gain
    from honestface.metrics.uncertainty import BETTER, WORSE

    levers = table["levers"]
    metrics = [m for m in LEVER_METRICS if all(m in r["metrics"] for r in levers.values())]
    head = "| lever | " + " | ".join(metrics) + " | generator min |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for name, row in levers.items():
        cells = []
        for m in metrics:
            r = row["metrics"][m]
            mark = {BETTER: " better", WORSE: " worse"}.get(r["verdict"], "")
            cells.append(f"{format_gain(r)} ({r['faces_better']}/{r['faces']}){mark}")
        minutes = row.get("generator_minutes")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if minutes is None else minutes} |")
    return "\n".join(lines) + "\n"
