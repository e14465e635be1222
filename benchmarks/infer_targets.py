"""The inference benchmark's roofline columns and its goals (issue 17), checked on a result list of
`benchmarks/infer.py`.

Roofline (our choice): a stage's achieved GFLOP/s is its counted FLOPs (torch's FlopCounterMode) over its median
time; its `fraction` compares it with the machine's 3x3-convolution GFLOP/s measured right before each of the
stage's timed runs (`benchmarks/roofline.py` ConvBeside): run by run where the result has `yardstick_gflop_runs`
(each run's seconds times the yardstick measured right before it; the fraction is the median over the runs of the
counted GFLOP over that), else the median time against the median yardstick (`conv3x3_gflops_beside`), else the
run's `measured_gflops`. Pairing matters on this CPU: its speed state can switch between two runs of a stage. The
face's roofline time is the counted FLOPs of the four networks (VAE encoder, VRE, UNet, VAE decoder; plus the IDE
for full HonestFace) at the convolution throughput measured beside the pipeline's runs; `roofline_ratio` is the
pipeline's measured seconds per face over it (run by run, the median, where the result has the pipeline's
`yardstick_gflop_runs`). `overhead_seconds_per_face` is the pipeline's time outside the networks (image conversion,
resize, token handling, output conversion): measured within the pipeline's own runs
(`infer_common.time_inside_networks`) where the result has it, else the pipeline's time minus the stages' (which
mixes moments of different machine speed). From three profiled runs of each network (`op_seconds_per_face`,
benchmarks/infer_profile.py; each figure the median over the runs): `other_ops_share`, the share of its time
outside the convolution, matmul and attention kernels (normalisation, activations, elementwise arithmetic, copies),
and `gemm_kernel_fraction`, its counted GFLOP over the seconds of those kernels at the yardstick timed right before
each profiled run: the fraction the stage would reach if nothing else took time. A stage's fraction is about its
`gemm_kernel_fraction` times one minus its `other_ops_share`, so the two say whether the kernels or the passes
between them hold it below the goal.
`pipeline_vs_stages`: the pipeline's seconds per face over the sum of its networks' (timed at other moments); below
`MIN_PIPELINE_VS_STAGES` the CPU ran the pipeline in another speed state than its stages, and the roofline goal's
row says `comparable: false`.

Goals (issue 17, CPU, SD 2.1 size): every network stage at >= 85% of the convolution throughput; the VRE and the
overhead each under 0.3 s per face; the whole face at most 1.15x its roofline time; peak RSS at most 4 GiB when
restoring from OSDFace's files (the converted folder: loading, packing and the pipeline's runs,
`pipeline_peak_memory_mb`) and during the one-time conversion reported beside it; the load from a saved folder at
most 1.5x the time to read its files; full HonestFace (K references, cached) at most 1.15x the OSDFace-compatible
model's time per face.
"""

from __future__ import annotations

import statistics

NETWORKS = ("vae_encode", "vre", "unet", "vae_decode", "ide")
GEMM_KINDS = ("attention", "convolution", "matmul")  # benchmarks/infer_profile.py's kinds that do the counted FLOPs
MIN_PIPELINE_VS_STAGES = 0.9  # below: the pipeline ran in another speed state than its stages (our threshold)
TARGETS = {"stage_fraction": 0.85, "vre_seconds": 0.3, "overhead_seconds": 0.3, "roofline_ratio": 1.15,
           "peak_gib": 4.0, "load_vs_read": 1.5, "honestface_vs_osdface_time": 1.15}


def add_roofline(result: dict, machine: dict) -> None:
    """Add `achieved_gflops`, `fraction_of_conv`, `roofline_seconds_per_face`, `roofline_ratio`,
    `overhead_seconds_per_face`, and from the profiled runs `other_ops_share` and `gemm_kernel_fraction`, to one
    HonestFace result of benchmarks/infer.py (in place)."""
    if "gflop_per_face" not in result:
        return
    beside = result.get("conv3x3_gflops_beside", {})
    runs = result.get("yardstick_gflop_runs", {})
    secs, gflop = result["seconds_per_face"], result["gflop_per_face"]
    achieved = {k: round(gflop[k] / secs[k], 1) for k in gflop if secs.get(k)}
    result["achieved_gflops"] = achieved
    result["fraction_of_conv"] = {
        # each run against the yardstick measured right before it, then the median; else the medians' quotient
        k: round(statistics.median(gflop[k] / r for r in runs[k]) if runs.get(k)
                 else v / beside.get(k, machine["conv3x3_gflops"]), 3)
        for k, v in achieved.items()}
    # the face's roofline time at the yardstick measured beside the pipeline's runs
    roofline = sum(gflop.values()) / beside.get("pipeline", machine["conv3x3_gflops"])
    result["roofline_seconds_per_face"] = round(roofline, 4)
    result["roofline_ratio"] = round(statistics.median(r / sum(gflop.values()) for r in runs["pipeline"])
                                     if runs.get("pipeline") else result["pipeline_seconds_per_face"] / roofline, 3)
    # from the profiled runs (benchmarks/infer_profile.py): the share of the time outside the GEMM kernels, and the
    # fraction the stage would reach if that time were zero (its counted GFLOP over the GEMM kernels' seconds, at the
    # yardstick timed right before each profiled run); each the median over the profiled runs
    ops, beside_profile = result.get("op_seconds_per_face", {}), result.get("conv3x3_gflops_beside_profile", {})
    result["other_ops_share"], result["gemm_kernel_fraction"] = {}, {}
    for k, profiled in ops.items():
        gemm = [sum(v for kind, v in run.items() if kind in GEMM_KINDS) for run in profiled]
        result["other_ops_share"][k] = round(statistics.median(1 - g / sum(run.values())
                                                               for g, run in zip(gemm, profiled, strict=True)), 3)
        if k in gflop and all(gemm) and k in beside_profile:
            result["gemm_kernel_fraction"][k] = round(statistics.median(
                gflop[k] / (g * y) for g, y in zip(gemm, beside_profile[k], strict=True)), 3)
    # the pipeline against the sum of its stages, timed at other moments: well below 1, the CPU's speed state
    # differed between them (measured 0.72 on 2026-12-07), and the roofline ratio compares the two states
    inside = sum(secs[k] for k in NETWORKS if k in secs)
    result["pipeline_vs_stages"] = round(result["pipeline_seconds_per_face"] / inside, 3)
    if "overhead_seconds_per_face" not in result:  # measured inside the pipeline's runs where the result has it
        result["overhead_seconds_per_face"] = round(result["pipeline_seconds_per_face"] - inside, 4)


def check_targets(results: list[dict], precision: list[dict], conversion: dict | None = None,
                  comparisons: list[dict] | None = None) -> list[dict]:
    """Each SD 2.1-size figure against its goal: value, target, met, margin (value - target). The full/OSDFace
    time ratio comes from `comparisons` (both variants timed in alternation in one process,
    benchmarks/infer_compare.py) where there is one, else from the two separate measurements."""
    rows = {(r["variant"], r["batch"]): r for r in results if r.get("scale") == "sd21"}
    out: list[dict] = []

    def add(name: str, value: float, target: float, lower_is_better: bool = True, **extra: object) -> None:
        met = value <= target if lower_is_better else value >= target
        out.append({"goal": name, "value": round(value, 3), "target": target, "met": met,
                    "margin": round(value - target, 3), **extra})

    for (variant, batch), r in sorted(rows.items()):
        label = f"{variant} batch {batch}"
        for stage, fraction in r.get("fraction_of_conv", {}).items():
            add(f"{label}: {stage} fraction of conv throughput", fraction, TARGETS["stage_fraction"], False)
        if "vre" in r["seconds_per_face"]:
            add(f"{label}: VRE seconds per face", r["seconds_per_face"]["vre"], TARGETS["vre_seconds"])
        if "overhead_seconds_per_face" in r:
            add(f"{label}: seconds outside the networks per face", r["overhead_seconds_per_face"],
                TARGETS["overhead_seconds"])
            # not comparable where the pipeline ran well faster than its own stages (a speed-state switch)
            add(f"{label}: pipeline / roofline time", r["roofline_ratio"], TARGETS["roofline_ratio"],
                comparable=r.get("pipeline_vs_stages", 1.0) >= MIN_PIPELINE_VS_STAGES)
        # the user's path (load + pipeline) where the result has it, else the whole benchmark process
        peak = r.get("pipeline_peak_memory_mb", r["peak_memory_mb"])
        add(f"{label}: peak RSS restoring faces (GiB)", peak / 1024, TARGETS["peak_gib"])
        add(f"{label}: load / file read time", r["load_seconds"] / max(r["files_read_seconds"], 1e-3),
            TARGETS["load_vs_read"])
    if conversion is not None:
        add("one-time conversion of the OSDFace files: peak RSS (GiB)", conversion["peak_memory_mb"] / 1024,
            TARGETS["peak_gib"])
    alternating = [c for c in comparisons or () if c.get("scale") == "sd21" and c.get("batch") == 1]
    if alternating:
        add("honestface (K references) / osdface time per face, timed in alternation", alternating[0]["ratio"],
            TARGETS["honestface_vs_osdface_time"])
    elif ("osdface", 1) in rows and ("honestface", 1) in rows:
        add("honestface (K references) / osdface time per face", rows["honestface", 1]["pipeline_seconds_per_face"]
            / rows["osdface", 1]["pipeline_seconds_per_face"], TARGETS["honestface_vs_osdface_time"])
    for p in precision:
        if p["scale"] == "sd21":
            add(f"{p['variant']}: {p['dtype']} vs fp32 PSNR (dB)", p["psnr_vs_fp32_db"], 40.0, False)
    return out
