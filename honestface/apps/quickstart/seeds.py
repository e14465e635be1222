"""The quickstart over several seeds: one full run per seed, then per metric the spread across seeds and verdicts.

`run_seeds(output, [0, 1, 2])` runs `run_quickstart` into `output/seed_<s>` (the seed sets the augmented views, the
degradation of the held-out faces, the initialisation and the data order) and writes `output/seeds.json` and
`output/seeds.md`. Per metric: mean and sample standard deviation across seeds of the LQ and restored means and of
the gain, each seed's gain with its bootstrap 95% interval and "better on N/M", and one verdict: better (worse) than
the input only when the interval excludes zero in that direction in every seed, otherwise "no measurable change"
(`honestface.metrics.uncertainty.verdict_across`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from honestface.metrics.uncertainty import verdict_across

__all__ = ["SEEDS_STAMP", "aggregate_seeds", "markdown_seeds_table", "parse_seeds", "run_seeds"]

SEEDS_STAMP = "quickstart_seeds.json"


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]; distinct non-negative integers, in the given order."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds takes comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds needs distinct non-negative integers such as 0,1,2, got {text!r}")
    return seeds


def _sd(x: Sequence[float]) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0


def aggregate_seeds(summaries: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Seed -> quickstart `summary.json` content  ->  the multi-seed table (see the module docstring)."""
    if not summaries:
        raise ValueError("aggregate_seeds needs at least one seed's summary")
    seeds = list(summaries)
    names = [m for m in summaries[seeds[0]]["metrics"] if all(m in summaries[s]["metrics"] for s in seeds)]
    metrics = {}
    for m in names:
        rows = [summaries[s]["metrics"][m] for s in seeds]
        per_seed = [{"seed": s, **{k: r[k] for k in ("lq", "restored", "gain", "ci_low", "ci_high", "faces_better",
                                                     "faces", "verdict")}} for s, r in zip(seeds, rows)]
        metrics[m] = {"higher_is_better": rows[0]["higher_is_better"],
                      **{f"{k}_{stat}": f([r[k] for r in rows]) for k in ("lq", "restored", "gain")
                         for stat, f in (("mean", lambda v: float(np.mean(v))), ("sd", _sd))},
                      "per_seed": per_seed, "verdict": verdict_across([r["verdict"] for r in rows])}
    first = summaries[seeds[0]]
    settings = {k: v for k, v in first["settings"].items() if k != "seed"}
    return {"seeds": seeds, "settings": settings, "environment": first.get("environment", {}),
            "test_identities": first["test_identities"], "num_test_faces": first["num_test_faces"],
            "metrics": metrics}


def markdown_seeds_table(agg: dict[str, Any]) -> str:
    """The multi-seed table as Markdown (mean ± sd across seeds; per seed: gain [95% CI] and faces better)."""
    from honestface.apps.quickstart.report import LABELS, claims_sentence, format_gain, format_value

    lines = ["| metric (held-out faces) | LQ input | restored | gain [95% CI] per seed | better on per seed | verdict |",
             "|---|---|---|---|---|---|"]
    for m, t in agg["metrics"].items():
        arrow = "↑" if t["higher_is_better"] else "↓"
        gains = "; ".join(format_gain(r) for r in t["per_seed"])
        wins = ", ".join(f"{r['faces_better']}/{r['faces']}" for r in t["per_seed"])
        lines.append(f"| {LABELS.get(m, m)} {arrow} | {format_value(t['lq_mean'])} ± {t['lq_sd']:.2g} | "
                     f"{format_value(t['restored_mean'])} ± {t['restored_sd']:.2g} | {gains} | {wins} | {t['verdict']} |")
    return "\n".join([*lines, "", claims_sentence(agg["metrics"], where="in every seed")])


def run_seeds(output: str | os.PathLike, seeds: Sequence[int], progress: Callable[[str], None] | None = print,
              **settings: Any) -> dict[str, Any]:
    """Run the quickstart once per seed under `output/seed_<s>` (each resumable) and write the aggregate.

    settings: `run_quickstart` keyword arguments other than `output` and `seed`. Returns the aggregate, with
    "timings_s" (seed -> seconds of that run) added; `seeds.json` holds the aggregate without times.
    """
    import time

    from honestface.apps.quickstart.run import check_output_folder, run_quickstart
    from honestface.io import atomic_write_text

    if not seeds:
        raise ValueError("run_seeds needs at least one seed")
    out = Path(output)
    check_output_folder(out, SEEDS_STAMP)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / SEEDS_STAMP, json.dumps({"seeds": list(seeds), **settings}, indent=1, default=str))
    say = progress or (lambda _: None)
    summaries, timings = {}, {}
    for s in seeds:
        say(f"[seeds] seed {s} -> {out / f'seed_{s}'}")
        t0 = time.perf_counter()
        run_quickstart(out / f"seed_{s}", seed=s, progress=progress, **settings)
        timings[s] = time.perf_counter() - t0
        summaries[s] = json.loads((out / f"seed_{s}" / "summary.json").read_text())
    agg = aggregate_seeds(summaries)
    atomic_write_text(out / "seeds.json", json.dumps(agg, indent=1) + "\n")
    atomic_write_text(out / "seeds.md", markdown_seeds_table(agg) + "\n")
    return {**agg, "timings_s": timings}
