"""Two pipelines timed in alternation in one process, for a ratio that holds on a CPU whose speed changes (issue 17:
full HonestFace with K cached references at most 1.15x the OSDFace-compatible model's time per face).

Method (our choice): timing the two variants in separate processes, minutes apart, compared two speed states of
this project's CPU (its convolution throughput switches between about 850 and 2,700 GFLOP/s within a run,
measured 2026-12-07), so the ratio of their medians moved between 1.03 and 1.47. Here each repeat times A then B
back to back after one warm-up call of each; the ratio reported is the median of the per-repeat ratios B / A,
beside each variant's median seconds per face. Imported by benchmarks/infer.py (`--scale sd21` with both
variants); not a script of its own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def alternate(calls: dict[str, Callable[[], object]], repeats: int, device: torch.device, per: int = 1) -> dict:
    """`calls` = {"a": fn, "b": fn} (two entries, in order): one warm-up call each, then `repeats` rounds of a, b.
    Returns {"seconds_per_face": {name: median / per}, "ratio": median of b/a per round, "ratios": [...]}."""
    if len(calls) != 2:
        raise ValueError(f"alternate compares two calls, got {len(calls)}")
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t0)
    a, b = list(calls)
    ratios = [tb / ta for ta, tb in zip(times[a], times[b], strict=True)]
    return {"seconds_per_face": {k: round(statistics.median(v) / per, 4) for k, v in times.items()},
            "ratio": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
            "compared": f"{b} / {a}"}
