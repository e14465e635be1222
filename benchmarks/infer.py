"""Inference speed, memory and precision cost of HonestFace or VSPBFR per stage, at batch 1 and 4, printed as JSON.

    python benchmarks/infer.py                    # tiny preset (random weights), bf16, batches 1 and 4
    python benchmarks/infer.py --scale sd21       # SD 2.1-base size, random weights (CPU: needs >= 16 GB free)
    python benchmarks/infer.py --scale sd21 --device cuda --dtype fp16
    python benchmarks/infer.py --threads 1        # on a shared CPU: avoids thread oversubscription noise
    python benchmarks/infer.py --model vspbfr --full --batches 1 --repeats 1   # VSPBFR tiny and full (512) scale
    python benchmarks/infer.py --onnx --dtype fp32  # + onnxruntime vs torch fp32 seconds per face (CPU)
    python benchmarks/infer.py --model vspbfr --onnx  # the same for VSPBFR

HonestFace method (our choice). Two variants: `osdface` (the OSDFace-compatible model: VRE + one-step UNet + VAE,
no IDE, `use_ide=False`) and `honestface` (full, with the IDE and K references). Each is built once with random
weights (`HonestFace.from_preset(scale, pretrained=False)`) and saved to `--cache` (a temporary folder), then every
measurement loads it like a user's trained model: `HonestFace.from_pretrained(folder, dtype=dtype,
channels_last=True)` (weights read straight into the dtype and, for convolutions, into channels-last layout, built
on the meta device; `--no-channels-last` to compare) plus one LoRA merge = `load_seconds` (the imports before it
are not counted), next to
`files_read_seconds` (reading the same files once). On a CPU the VAE runs one face at a time inside a batch
(`enable_vae_slicing`, as `scripts/infer.py` does there) and the heap keeps freed activation buffers
(`reuse_large_allocations`, as `infer.reuse_cpu_memory` does; `--no-reuse-memory` to compare) and the frozen
convolution and linear weights of the UNet are packed for oneDNN (`enable_cpu_prepacking`, as
`infer.prepack_cpu_weights` does, timed apart as `prepack_seconds`; `--no-prepack` to compare). The stages are timed
by calling the model's parts in the order of `HonestFace.forward`: `vae_encode`, `vre`, `ide_refs`
(`encode_references`, once per identity, as the pipeline caches it), `ide` (the frozen towers on the LQ, the two IDE
heads and the fusion), `unet` (one step), `vae_decode`, and `paste_back` (honestface.face.paste_back into an
886x1280 photo); `pipeline` is the end-to-end per-face time of `HonestFacePipeline` in aligned mode (image
conversion, the stages, output conversion; references cached after the warm-up). Inputs are real: jittered 512 px
views of the bundled aligned Tom Hanks face (112 px, so really low quality), the references other views of it. Each
stage runs once to warm up, then `--repeats` times; the median is reported as seconds per face (`ide_refs`: per
reference set); each timed run of a network stage and of the pipeline is preceded by the conv3x3 yardstick
(`roofline.ConvBeside`, `conv3x3_gflops_beside`) the stage is divided by, run by run (`yardstick_gflop_runs`: each
run's seconds per face times the yardstick measured right before it). Three more runs of each of the four networks
under torch.profiler split its time by operator kind (`op_seconds_per_face`, per run: convolution, matmul,
attention, normalisation, activation, elementwise, copy, other; `benchmarks/infer_profile.py`), each with the
yardstick timed right before it (`conv3x3_gflops_beside_profile`). CUDA stages are timed with synchronisation.
Each measurement runs in its own subprocess so that peak memory is its own: peak RSS (ru_maxrss, loading included)
on CPU, `torch.cuda.max_memory_allocated` on a GPU. The pipeline is timed first, and
`pipeline_peak_memory_mb` is the peak right after it: load, packing and restoring faces, the path a user takes (the
goal's figure). `peak_memory_mb` is the whole process's, the per-stage runs and FLOP counts after it included (they
hold every stage's output at once, and the heap kept from the VAE encoder's runs is too fragmented for the
decoder's larger buffers: +0.07 and +0.31 GiB in two runs on 2026-12-07). `precision`: PSNR between the pipeline's
restoration of the same face by the model loaded in `--dtype` and in float32. `variant_comparison` (library
folders, both variants): one more process loads both and times their pipelines in alternation at batch 1
(`infer_compare.alternate`): the full/OSDFace ratio the goal check uses. `prepack_comparison` (CPU, SD 2.1 size,
OSDFace variant, unless `--no-prepack`): one more process times the UNet with plain and with packed weights in
alternation (`infer_compare.compare_prepacking`).

ONNX (`--onnx`, HonestFace from the library's folders): each cached model is exported once (`honestface-export`)
and its own subprocess times `OnnxPipeline` (onnxruntime, CPU provider, `--threads` intra-op threads) and the torch
float32 `HonestFacePipeline` on the same faces and references, printed side by side under "onnx" with the PSNR
between their outputs. With `--model vspbfr --onnx` the same for `VSPBFRPipeline` (its random-weight model saved
once to `--cache`); its PSNR is low at random weights because the four-block code diffuser amplifies float
round-off to O(1) there (tests/test_onnx_export_vspbfr.py says why), so only the seconds are comparable.

VSPBFR (`--model vspbfr`; scales "tiny" and, with `--full`, the released "full" configuration: StyleGAN2 1024,
restoration 512, random weights from `build_vspbfr`): the stages of `VSPBFR.forward` with one seeded generator per
face, as `VSPBFRPipeline` runs it: `style_encoder` (encode_lq, one face at a time), `code_diffuser` (the 4-step
chain, one face at a time), `feature_bank` (StyleGAN2 on w0 with features, pooled inverted image), `restoration`
(the restoration network with style mixing 0.5), then `paste_back` and `pipeline` as above.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # works without `pip install -e .`
sys.path.insert(0, str(ROOT / "benchmarks"))
from infer_common import (
    convert_osdface_files,
    faces_tensor,
    input_faces,
    machine_info,
    peak_memory,
    psnr,
    read_seconds,
    start_measuring,
    time_inside_networks,
)
from infer_onnx import measure_onnx, measure_onnx_vspbfr
from infer_profile import profile_stage
from infer_targets import add_roofline, check_targets
from infer_vspbfr import measure_vspbfr
from roofline import ConvBeside, count_flops, machine_throughput
from roofline import timed as _timed

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIN_FREE_GB_SD21 = 16
MIN_FREE_GB_VSPBFR_FULL = 6


def _free_gb() -> float:
    """Available memory (GB) as `free -g` reports it (MemAvailable)."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["MemAvailable"] / 2**20


def _cache_folder(cache: Path, scale: str, variant: str) -> Path:
    """The saved random-weight model of (scale, variant), built once by `build_cached` and reused."""
    return cache / f"{scale}-{variant}-seed0-v1"


def build_cached(cache: Path, scale: str, variant: str) -> Path:
    """Build the random-weight model with `HonestFace.from_preset` and `save_pretrained` it (atomically) once."""
    import shutil
    import tempfile

    from honestface.models import HonestFace

    folder = _cache_folder(cache, scale, variant)
    if (folder / "honestface_config.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{folder.name}-"))
    try:
        model = HonestFace.from_preset(scale, pretrained=False, with_discriminator=False,
                                       use_ide=variant == "honestface", encode_mode="mode")
        model.save_pretrained(tmp)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_pipeline(folder: Path, device: torch.device, dtype: torch.dtype, channels_last: bool = True,
                  prepack: bool = True) -> Any:
    """The saved model as scripts/infer.py loads it: read in `dtype` (convolutions channels-last), LoRA merged,
    the VAE one face at a time on a CPU (batching it gains nothing there; batch 1's memory), and there the frozen
    weights packed for oneDNN (`prepack`)."""
    from honestface.models import HonestFace
    from honestface.pipelines import HonestFacePipeline

    model = HonestFace.from_pretrained(folder, with_discriminator=False, dtype=dtype,
                                       channels_last=channels_last).to(device)
    pipe = HonestFacePipeline(model)
    pipe.merge_lora()
    if channels_last:
        pipe.enable_channels_last()
    if device.type == "cpu":
        pipe.enable_vae_slicing()
        if prepack:
            pipe.enable_cpu_prepacking()
    return pipe


@torch.no_grad()
def measure(folder: Path, batch: int, device: torch.device, dtype: torch.dtype, repeats: int, refs: int,
            output: Path | None = None, channels_last: bool = True, reuse_memory: bool = True,
            prepack: bool = True) -> dict:
    """Load the saved model in `dtype`, time every stage and the pipeline at `batch`; with `output`, only write the
    pipeline's restoration of the first face there (.npy) for the precision comparison."""
    from honestface.face import paste_back
    from honestface.models import HonestFace  # noqa: F401 (imported before the load is timed: 2-5 s of diffusers)
    from honestface.pipelines import HonestFacePipeline  # noqa: F401

    read_s, size_mb = read_seconds(folder)
    t0 = time.perf_counter()
    pipe = load_pipeline(folder, device, dtype, channels_last, prepack=False)
    model = pipe.model
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    packed = pipe.enable_cpu_prepacking() if prepack and device.type == "cpu" else 0
    prepack_s = time.perf_counter() - t0
    reuse = start_measuring(device, reuse_memory)
    size = pipe.resolution  # the model's native face size (never the VAE's sample_size)
    faces, ref_faces = input_faces(size, batch, refs)
    references = None
    if model.use_ide:  # references cached as a user does for many faces of one person: one ReferencePool
        from honestface.pipelines import ReferencePool

        references = ReferencePool(ref_faces)
    if output is not None:
        result = pipe(faces[:1], references=references, mode="aligned")
        np.save(output, result.images[0])
        return {"output": str(output)}

    lq, ref = faces_tensor(pipe, faces), faces_tensor(pipe, ref_faces).unsqueeze(0)  # (B, 3, S, S), (1, K, 3, S, S)
    times: dict[str, float] = {}
    conv = ConvBeside(device, dtype)
    beside: dict[str, float] = {}  # conv3x3 GFLOP/s measured right before each stage's runs
    # per run: its seconds per face x the yardstick measured right before it, the yardstick GFLOP the run cost
    # (the roofline columns pair each run with its own yardstick: the CPU's speed state can switch between runs)
    paired: dict[str, list[float]] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        run_s, out, gflops = conv.runs(fn, repeats)
        times[name], beside[name] = statistics.median(run_s), statistics.median(gflops)
        paired[name] = [round(t * g / batch, 2) for t, g in zip(run_s, gflops, strict=True)]
        return out

    # the user's path first (load, packing, the pipeline): its peak memory is the one a user sees; the per-stage
    # runs and FLOP counts below hold every stage's output at once and add their own heap growth
    outside: list[float] = []  # per pipeline run: its seconds minus those inside the networks, in the same run
    with time_inside_networks(model, device) as inside:
        def restore() -> Any:
            inside.clear()
            t0 = time.perf_counter()
            out = pipe(faces, references=references, mode="aligned", batch_size=batch)
            outside.append(time.perf_counter() - t0 - sum(inside))
            return out

        stage("pipeline", restore)
    pipe_s = times.pop("pipeline")  # seconds per batch, not a stage of the model
    pipeline_peak = peak_memory(device)["peak_memory_mb"]
    z = stage("vae_encode", lambda: model.generator.encode(lq))
    p_L = stage("vre", lambda: model.vre(lq))
    p = p_L
    if model.use_ide:
        times["ide_refs"], feats = _timed(lambda: model.encode_references(ref), device, repeats)
        emb, tok, mask = model._references(batch, None, feats.mask, feats.embeddings, feats.tokens)

        def ide() -> torch.Tensor:
            p_F, p_I = model._identity_tokens(lq, emb, tok, mask)
            if model.fusion.config.blind_mode == "null":
                return model.fusion(p_L, p_F, p_I, torch.zeros(batch, dtype=torch.bool, device=device))
            return model.fusion(p_L, p_F, p_I)

        p = stage("ide", ide)
    _, z_hat = stage("unet", lambda: model.generator.denoise(z, p))
    x_hat = stage("vae_decode", lambda: model.generator.decode(z_hat))
    networks = {"vae_encode": lambda: model.generator.encode(lq), "vre": lambda: model.vre(lq),
                "unet": lambda: model.generator.denoise(z, p), "vae_decode": lambda: model.generator.decode(z_hat)}
    flops = {k: count_flops(fn) for k, fn in (networks | ({"ide": ide} if model.use_ide else {})).items()}
    profiles = {k: profile_stage(fn, device, conv) for k, fn in networks.items()}  # 3 more runs, profiled
    crops = ((x_hat.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    photo = np.zeros((886, 1280, 3), np.uint8)
    mats = np.stack([np.array([[0.5, 0.0, -40.0 * i], [0.0, 0.5, -30.0]]) for i in range(batch)])
    times["paste_back"], _ = _timed(lambda: paste_back(photo, list(crops), mats), device, repeats)
    per_face = {k: v if k == "ide_refs" else v / batch for k, v in times.items()}
    return {"scale": folder.name.split("-")[0], "variant": "honestface" if model.use_ide else "osdface",
            "batch": batch, "resolution": size, "references": refs if model.use_ide else 0, "device": str(device),
            "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "channels_last": channels_last, "vae_slicing": device.type == "cpu", "reuse_cpu_memory": reuse,
            "prepacked_layers": packed, "weights_mb": round(size_mb, 1), "files_read_seconds": round(read_s, 2),
            "load_seconds": round(load_s, 2), "prepack_seconds": round(prepack_s, 2),
            "seconds_per_face": {k: round(v, 5) for k, v in per_face.items()},
            "gflop_per_face": {k: round(v / batch / 1e9, 2) for k, v in flops.items()},
            "model_seconds_per_face": round(sum(v for k, v in per_face.items()
                                                if k not in ("ide_refs", "paste_back")), 5),
            "pipeline_seconds_per_face": round(pipe_s / batch, 5), "faces_per_second": round(batch / pipe_s, 4),
            "overhead_seconds_per_face": round(statistics.median(outside[1:]) / batch, 5),  # after the warm-up
            "conv3x3_gflops_beside": {k: round(v, 1) for k, v in beside.items()},
            "yardstick_gflop_runs": paired,
            "op_seconds_per_face": {k: [{kind: round(v / batch, 5) for kind, v in run.items()}
                                        for run in prof["op_seconds"]] for k, prof in profiles.items()},
            "conv3x3_gflops_beside_profile": {k: prof["conv3x3_gflops"] for k, prof in profiles.items()},
            "pipeline_peak_memory_mb": pipeline_peak} | peak_memory(device)


def _child(args: argparse.Namespace, what: str, *extra: str) -> dict | str:
    """Run one measurement in its own process (its own peak memory) -> its JSON, or the error's last line."""
    cmd = [sys.executable, __file__, "--one", what, "--model", args.model, "--device", args.device, "--dtype",
           args.dtype, "--repeats", str(args.repeats), "--refs", str(args.refs), "--threads", str(args.threads),
           "--cache", str(args.cache), *(["--no-channels-last"] if args.no_channels_last else []),
           *(["--no-reuse-memory"] if args.no_reuse_memory else []), *(["--no-prepack"] if args.no_prepack else []),
           *extra]
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if run.returncode != 0:
        return (run.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _one(args: argparse.Namespace, device: torch.device) -> dict:
    if args.model == "vspbfr":
        *kind, scale, batch = args.one.split(":")
        if kind == ["onnx"]:
            return measure_onnx_vspbfr(scale, int(batch), args.repeats, args.threads, args.cache)
        return measure_vspbfr(scale, int(batch), device, _DTYPES[args.dtype], args.repeats,
                              reuse_memory=not args.no_reuse_memory)
    kind, scale, variant, batch = args.one.split(":")
    if kind == "prepack":  # the UNet plain and packed for oneDNN, in alternation (CPU)
        from infer_compare import compare_prepacking

        folder = Path(args.folder) if args.folder else _cache_folder(args.cache, scale, variant)
        pipe = load_pipeline(folder, device, _DTYPES[args.dtype], not args.no_channels_last, prepack=False)
        start_measuring(device, not args.no_reuse_memory)  # as the infer app does before it packs
        return {"scale": scale, **compare_prepacking(pipe, args.repeats)}
    if kind == "compare":  # both variants in this one process, their pipelines timed in alternation
        from infer_compare import compare_variants

        pipes = {v: load_pipeline(_cache_folder(args.cache, scale, v), device, _DTYPES[args.dtype],
                                  not args.no_channels_last, not args.no_prepack) for v in ("osdface", "honestface")}
        start_measuring(device, not args.no_reuse_memory)
        return compare_variants(pipes, int(batch), args.repeats, args.refs)
    if kind == "build":
        return {"folder": str(build_cached(args.cache, scale, variant))}
    if kind == "files":  # OSDFace's released formats, then one conversion (timed, its own peak memory)
        return convert_osdface_files(args.cache / "osdface-home", _DTYPES[args.dtype])
    folder = Path(args.folder) if args.folder else _cache_folder(args.cache, scale, variant)
    if kind == "onnx":
        result = measure_onnx(folder, int(batch), args.repeats, args.refs, args.threads, not args.no_channels_last)
        return {**result, "scale": scale, "variant": variant}
    output = Path(args.output_npy) if args.output_npy else None
    result = measure(folder, int(batch), device, _DTYPES[args.dtype], args.repeats, args.refs, output,
                     channels_last=not args.no_channels_last, reuse_memory=not args.no_reuse_memory,
                     prepack=not args.no_prepack)
    return result if args.folder is None else {**result, "scale": scale, "variant": variant}


def main(argv: list[str] | None = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["honestface", "vspbfr"], default="honestface", help="model family")
    p.add_argument("--scale", nargs="+", choices=["tiny", "sd21"], default=["tiny"],
                   help="HonestFace sizes to measure (sd21: SD 2.1-base size, random weights)")
    p.add_argument("--sd21", action="store_true", help="same as --scale tiny sd21")
    p.add_argument("--variants", nargs="+", choices=["osdface", "honestface"], default=["osdface", "honestface"],
                   help="HonestFace: OSDFace-compatible (VRE + UNet + VAE, no IDE) and/or full (IDE, K references)")
    p.add_argument("--full", action="store_true", help="VSPBFR: also measure the full (512 px) scale (random "
                   "weights)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16",
                   help="model dtype (weights read straight into it); compared with fp32 by PSNR")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--refs", type=int, default=4, help="references per identity (K)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads); 0 = torch default")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW convolution weights (to compare)")
    p.add_argument("--no-reuse-memory", action="store_true", help="CPU: let glibc map and unmap every large "
                   "activation as it does by default (to compare with infer.reuse_cpu_memory's reuse)")
    p.add_argument("--no-prepack", action="store_true", help="CPU: leave the weights plain, reordered by oneDNN on "
                   "every call (to compare with infer.prepack_cpu_weights' packing)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "honestface-bench",
                   help="where the random-weight models are saved once and re-loaded from")
    p.add_argument("--onnx", action="store_true", help="on a CPU: also export each model to ONNX and print "
                   "onnxruntime vs torch fp32 seconds per face side by side (\"onnx\")")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one measurement in this process
    p.add_argument("--output-npy", help=argparse.SUPPRESS)  # internal: write the first restoration there
    p.add_argument("--folder", help=argparse.SUPPRESS)  # internal: measure this model folder
    p.add_argument("--from", dest="source", choices=["library", "osdface-files"], default="library",
                   help="HonestFace: the library's own saved folders (default) or OSDFace's released file formats "
                        "(random weights, SD 2.1 size) loaded by name and converted once, as `--model osdface`")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(_one(args, device)))
        return 0
    results, skipped, precision, onnx_rows, comparisons, packing = [], [], [], [], [], []

    def record(out: dict | str, what: str) -> bool:
        if isinstance(out, str):
            skipped.append(f"{what} failed: {out}")
            print(skipped[-1], file=sys.stderr)
            return False
        results.append(out)
        return True

    if args.model == "vspbfr":
        for scale in ["tiny"] + (["full"] if args.full else []):
            if scale == "full" and device.type == "cpu" and _free_gb() < MIN_FREE_GB_VSPBFR_FULL:
                skipped.append(f"full on CPU skipped: {_free_gb():.1f} GB available, needs "
                               f"{MIN_FREE_GB_VSPBFR_FULL} GB")
                continue
            for batch in args.batches:
                record(_child(args, f"{scale}:{batch}"), f"{scale} batch {batch}")
                if args.onnx:
                    row = _child(args, f"onnx:{scale}:{batch}")
                    if isinstance(row, str):
                        skipped.append(f"{scale} batch {batch} onnx comparison failed: {row}")
                    else:
                        onnx_rows.append(row)
        report = {"results": results, "skipped": skipped, **({"onnx": onnx_rows} if args.onnx else {})}
        print(json.dumps(report, indent=1))
        return 0 if results else 1
    roofline = machine_throughput(device, _DTYPES[args.dtype])  # this run's yardstick (benchmarks/roofline.py)
    if args.source == "osdface-files":
        args.scale, args.variants = ["sd21"], ["osdface"]
    scales = ["tiny", "sd21"] if args.sd21 else args.scale
    for scale in scales:
        if scale == "sd21" and device.type == "cpu" and _free_gb() < MIN_FREE_GB_SD21:
            skipped.append(f"sd21 on CPU skipped: {_free_gb():.1f} GB available, needs {MIN_FREE_GB_SD21} GB")
            print(skipped[-1], file=sys.stderr)
            continue
        for variant in args.variants:
            extra: tuple[str, ...] = ()
            if args.source == "osdface-files":
                built = _child(args, f"files:{scale}:{variant}:0")
                if isinstance(built, dict):
                    extra, conversion = ("--folder", built["folder"]), built
            else:
                built = _child(args, f"build:{scale}:{variant}:0")
            if isinstance(built, str):
                skipped.append(f"{scale} {variant}: building the model failed: {built}")
                continue
            if device.type == "cpu" and not args.no_prepack and variant == "osdface" and scale == "sd21":
                row = _child(args, f"prepack:{scale}:{variant}:1", *extra)
                if isinstance(row, str):
                    skipped.append(f"{scale} prepack comparison failed: {row}")
                else:
                    packing.append(row)
            for batch in args.batches:
                record(_child(args, f"time:{scale}:{variant}:{batch}", *extra), f"{scale} {variant} batch {batch}")
                if args.onnx and args.source == "library":
                    row = _child(args, f"onnx:{scale}:{variant}:{batch}")
                    if isinstance(row, str):
                        skipped.append(f"{scale} {variant} batch {batch} onnx comparison failed: {row}")
                    else:
                        onnx_rows.append(row)
            if args.dtype != "fp32" and args.source == "library":  # the precision cost: this dtype's restoration vs float32's, same face
                npy = {d: Path(built["folder"]) / f"restored-{d}.npy" for d in (args.dtype, "fp32")}
                outs = [_child(argparse.Namespace(**{**vars(args), "dtype": d}), f"time:{scale}:{variant}:1",
                               "--output-npy", str(npy[d]), *extra) for d in npy]
                bad = [o for o in outs if isinstance(o, str)]
                if bad:
                    skipped.append(f"{scale} {variant} precision comparison failed: {bad[0]}")
                else:
                    precision.append({"scale": scale, "variant": variant, "dtype": args.dtype, "psnr_vs_fp32_db":
                                      round(psnr(np.load(npy[args.dtype]), np.load(npy["fp32"])), 2)})
        measured = {(r["scale"], r["variant"]) for r in results}
        if args.source == "library" and {(scale, "osdface"), (scale, "honestface")} <= measured:
            row = _child(args, f"compare:{scale}:both:1")  # the two variants in one process, alternating
            if isinstance(row, str):
                skipped.append(f"{scale} variant comparison failed: {row}")
            else:
                comparisons.append({"scale": scale, **row})
    for r in results:
        add_roofline(r, roofline)
    report = {"machine": {**machine_info(), "measured_gflops": roofline}, "source": args.source, "results": results,
              "precision": precision, "variant_comparison": comparisons, "prepack_comparison": packing,
              "skipped": skipped}
    if args.onnx:
        report["onnx"] = onnx_rows
    if args.source == "osdface-files" and "conversion" in locals():
        report["conversion"] = conversion
    if device.type == "cpu" and "sd21" in scales:
        report["targets"] = check_targets(results, precision, report.get("conversion"), comparisons)
    print(json.dumps(report, indent=1))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
