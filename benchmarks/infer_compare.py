"""Two pipelines timed in alternation in one process, for a ratio that holds on a CPU whose speed changes (issue 17:
full HonestFace with K cached references at most 1.15x the OSDFace-compatible model's time per face).

Method (our choice): timing the two variants in separate processes, minutes apart, compared two speed states of
this project's CPU (its convolution throughput switches between about 850 and 2,700 GFLOP/s within a run,
measured 2026-12-07), so the ratio of their medians moved between 1.03 and 1.47. Here each repeat times A then B
back to back after one warm-up call of each; the ratio reported is the median of the per-repeat ratios B / A,
beside each variant's median seconds per face. Imported by benchmarks/infer.py (`--scale sd21` with both
variants); not a script of its own.

`compare_prepacking` does the same for the UNet with plain weights and with weights packed for oneDNN
(`infer.prepack_cpu_weights`, honestface/models/cpu_prepack.py): each round unpacks or packs the one UNet in memory
(the packing timed apart), then times it with the conv3x3 yardstick beside each run (`roofline.ConvBeside`); the
ratio reported is the median of the per-round ratios packed / plain.
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


@torch.no_grad()
def compare_prepacking(pipe: object, repeats: int) -> dict:
    """`pipe`: a HonestFacePipeline loaded on a CPU with plain weights. Times its UNet (one face, the OSDFace prompt
    p_L) plain, then packed, `repeats` rounds. Returns seconds, yardsticks, the ratio and the packing seconds."""
    from infer_common import faces_tensor, input_faces
    from roofline import ConvBeside

    from honestface.models.cpu_prepack import prepack_cpu_weights, unpack_cpu_weights

    model, device, dtype = pipe.model, pipe.device, pipe.dtype
    lq = faces_tensor(pipe, input_faces(pipe.resolution, 1, 0)[0])  # (1, 3, S, S)
    z, p_L = model.generator.encode(lq), model.vre(lq)  # (1, 4, S/8, S/8), (1, 77, D)
    unet, conv = model.generator.unet, ConvBeside(device, dtype)
    rows: dict[str, list[tuple[float, float]]] = {"plain": [], "packed": []}
    pack_s: list[float] = []
    for _ in range(repeats):
        for mode, measured in rows.items():
            if mode == "plain":
                unpack_cpu_weights(unet)
            else:
                t0 = time.perf_counter()
                prepack_cpu_weights(unet)
                pack_s.append(time.perf_counter() - t0)
            seconds, _, gflops = conv.timed(lambda: model.generator.denoise(z, p_L), 2)
            measured.append((seconds, gflops))
    ratios = [b[0] / a[0] for a, b in zip(rows["plain"], rows["packed"], strict=True)]
    return {"unet_seconds": {k: [round(t, 3) for t, _ in v] for k, v in rows.items()},
            "conv3x3_gflops_beside": {k: [round(g) for _, g in v] for k, v in rows.items()},
            "ratio": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
            "compared": "packed / plain", "prepack_seconds": round(statistics.median(pack_s), 2)}


@torch.no_grad()
def compare_variants(pipes: dict[str, object], batch: int, repeats: int, refs: int) -> dict:
    """Full HonestFace (`pipes["honestface"]`, K references cached) against the OSDFace-compatible model
    (`pipes["osdface"]`) on the same faces, their pipelines timed in alternation (`alternate`)."""
    from infer_common import input_faces

    from honestface.pipelines import ReferencePool

    faces, ref_faces = input_faces(pipes["osdface"].resolution, batch, refs)
    pool = ReferencePool(ref_faces)
    calls = {"osdface": lambda: pipes["osdface"](faces, mode="aligned", batch_size=batch),
             "honestface": lambda: pipes["honestface"](faces, references=pool, mode="aligned", batch_size=batch)}
    return {"batch": batch, "references": refs, **alternate(calls, repeats, pipes["osdface"].device, per=batch)}
