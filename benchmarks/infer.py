"""Inference speed and memory of HonestFace or VSPBFR per stage, at batch 1 and 8, printed as JSON.

    python benchmarks/infer.py                    # tiny preset (random weights), batches 1 and 8
    python benchmarks/infer.py --sd21             # also SD 2.1 scale with random weights (CPU: needs >= 16 GB free)
    python benchmarks/infer.py --device cuda --dtype fp16 --sd21
    python benchmarks/infer.py --threads 1        # on a shared CPU: avoids thread oversubscription noise
    python benchmarks/infer.py --model vspbfr --full --batches 1 --repeats 1   # VSPBFR tiny and full (512) scale

Method (our choice): every stage is timed by calling the model's parts directly, in the order of
`HonestFace.forward` (honestface/models/honestface.py) with references precomputed once per identity as the
pipeline does: `ide_refs` = `encode_references` (frozen ArcFace + CLIP towers on the K references), then per LQ
batch `vae_encode` (generator.encode), `vre` (model.vre), `ide` (the frozen towers on the LQ, the two IDE heads and
the fusion), `unet` (generator.denoise, one step), `vae_decode` (generator.decode), and `paste_back`
(honestface.face.paste_back of the restored crops into an 886x1280 photo, on the CPU, as the pipeline does).
Each stage runs once to warm up, then `--repeats` times; the median is reported as seconds per face (stage time /
batch; `ide_refs` is per reference set). CUDA stages are timed with synchronisation. Each (scale, batch) runs in
its own subprocess so that peak memory is its own: peak RSS (ru_maxrss) on CPU, `torch.cuda.max_memory_allocated`
on a GPU. When `honestface.pipelines` is available, `pipeline` is the end-to-end per-face time of the pipeline's
aligned mode on the same batch (image conversion, the stages above and the output conversion).

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
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # works without `pip install -e .`

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MIN_FREE_GB_SD21 = 16
MIN_FREE_GB_VSPBFR_FULL = 6


def _free_gb() -> float:
    """Available memory (GB) as `free -g` reports it (MemAvailable)."""
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["MemAvailable"] / 2**20


def _peak_memory(device: torch.device) -> dict:
    """Peak memory of this process: CUDA max allocated on a GPU, else the peak RSS."""
    if device.type == "cuda":
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "peak_memory_kind": "cuda_max_allocated"}
    return {"peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_memory_kind": "rss"}


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds of `fn` over `repeats` runs after one warm-up, and its last result."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


@torch.no_grad()
def measure(scale: str, batch: int, device: torch.device, dtype: torch.dtype, repeats: int, refs: int) -> dict:
    from honestface.face import paste_back
    from honestface.models import HonestFace

    t0 = time.perf_counter()
    model = HonestFace.from_preset(scale, pretrained=False, with_discriminator=False).eval()
    model.merge_lora()
    model.to(device=device, dtype=dtype)
    build = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    size = int(model.vae.config.sample_size)
    g = torch.Generator().manual_seed(0)
    lq = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device, dtype)  # (B, 3, S, S) in [-1, 1]
    ref = (torch.rand(1, refs, 3, size, size, generator=g) * 2 - 1).to(device, dtype)  # one identity, K refs
    times: dict[str, float] = {}
    times["ide_refs"], feats = _timed(lambda: model.encode_references(ref), device, repeats)
    times["vae_encode"], z = _timed(lambda: model.generator.encode(lq), device, repeats)
    times["vre"], p_L = _timed(lambda: model.vre(lq), device, repeats)
    emb, tok, mask = model._references(batch, None, feats.mask, feats.embeddings, feats.tokens)

    def ide() -> torch.Tensor:
        p_F, p_I = model._identity_tokens(lq, emb, tok, mask)
        if model.fusion.config.blind_mode == "null":
            return model.fusion(p_L, p_F, p_I, torch.zeros(batch, dtype=torch.bool, device=device))
        return model.fusion(p_L, p_F, p_I)

    times["ide"], p = _timed(ide, device, repeats)
    times["unet"], (_, z_hat) = _timed(lambda: model.generator.denoise(z, p), device, repeats)
    times["vae_decode"], x_hat = _timed(lambda: model.generator.decode(z_hat), device, repeats)
    crops = ((x_hat.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    photo = np.zeros((886, 1280, 3), np.uint8)
    mats = np.stack([np.array([[0.5, 0.0, -40.0 * i], [0.0, 0.5, -30.0]]) for i in range(batch)])
    times["paste_back"], _ = _timed(lambda: paste_back(photo, list(crops), mats), device, repeats)
    per_face = {k: v if k == "ide_refs" else v / batch for k, v in times.items()}
    result = {"scale": scale, "batch": batch, "resolution": size, "references": refs, "device": str(device),
              "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
              "build_seconds": round(build, 2),
              "seconds_per_face": {k: round(v, 5) for k, v in per_face.items()},
              "model_seconds_per_face": round(sum(v for k, v in per_face.items() if k != "ide_refs"), 5)}
    try:
        from honestface.pipelines import HonestFacePipeline
    except ImportError:
        HonestFacePipeline = None
    if HonestFacePipeline is not None:
        pipe = HonestFacePipeline(model) if _takes_model(HonestFacePipeline) else None
        if pipe is not None:
            images = list(crops)
            refs_np = [list(((ref[0].float() + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())] * batch
            t, _ = _timed(lambda: pipe(images, references=refs_np, mode="aligned", batch_size=batch), device,
                          repeats)
            result["pipeline_seconds_per_face"] = round(t / batch, 5)
    return result | _peak_memory(device)


@torch.no_grad()
def measure_vspbfr(scale: str, batch: int, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    from honestface.face import paste_back
    from honestface.models.vspbfr import build_vspbfr
    from honestface.pipelines import VSPBFRPipeline

    t0 = time.perf_counter()
    model = build_vspbfr(scale).to(device=device, dtype=dtype).eval()
    build = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    size = model.size
    g = torch.Generator().manual_seed(0)
    lq = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device, dtype)  # (B, 3, S, S) in [-1, 1]

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(0) for _ in range(batch)]

    times: dict[str, float] = {}
    times["style_encoder"], w_hat = _timed(
        lambda: torch.cat([model.encode_lq(lq[b:b + 1]) for b in range(batch)]), device, repeats)
    times["code_diffuser"], w0 = _timed(lambda: model.style_prompt(w_hat, gens()), device, repeats)
    times["feature_bank"], (_, bank) = _timed(lambda: model.feature_bank(w0, gens()), device, repeats)
    times["restoration"], image = _timed(lambda: model.restore(lq, w0, bank, gens(), 0.5), device, repeats)
    crops = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    photo = np.zeros((886, 1280, 3), np.uint8)
    mats = np.stack([np.array([[0.5, 0.0, -40.0 * i], [0.0, 0.5, -30.0]]) for i in range(batch)])
    times["paste_back"], _ = _timed(lambda: paste_back(photo, list(crops), mats), device, repeats)
    per_face = {k: v / batch for k, v in times.items()}
    pipe = VSPBFRPipeline(model)
    t, _ = _timed(lambda: pipe(list(crops), mode="aligned", batch_size=batch), device, repeats)
    params = {name: round(sum(p.numel() for p in getattr(model, name).parameters()) / 1e6, 2)
              for name in ("style_encoder", "stylegan", "code_diffuser", "restoration")}
    result = {"model": "vspbfr", "scale": scale, "batch": batch, "resolution": size,
              "stylegan_size": model.stylegan_size, "params_million": params, "device": str(device),
              "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
              "build_seconds": round(build, 2), "seconds_per_face": {k: round(v, 5) for k, v in per_face.items()},
              "model_seconds_per_face": round(sum(v for k, v in per_face.items() if k != "paste_back"), 5),
              "pipeline_seconds_per_face": round(t / batch, 5)}
    return result | _peak_memory(device)


def _takes_model(cls: type) -> bool:
    import inspect

    params = list(inspect.signature(cls.__init__).parameters)
    return len(params) > 1 and params[1] == "model"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["honestface", "vspbfr"], default="honestface", help="model family")
    p.add_argument("--sd21", action="store_true", help="HonestFace: also measure SD 2.1 scale (random weights)")
    p.add_argument("--full", action="store_true", help="VSPBFR: also measure the full (512 px) scale (random "
                   "weights)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--refs", type=int, default=4, help="references per identity (K)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads); 0 = torch default")
    p.add_argument("--one", metavar="SCALE:BATCH", help=argparse.SUPPRESS)  # internal: one measurement
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.one:
        scale, batch = args.one.split(":")
        if args.model == "vspbfr":
            print(json.dumps(measure_vspbfr(scale, int(batch), device, _DTYPES[args.dtype], args.repeats)))
        else:
            print(json.dumps(measure(scale, int(batch), device, _DTYPES[args.dtype], args.repeats, args.refs)))
        return 0
    results, skipped = [], []
    big, need = ("full", MIN_FREE_GB_VSPBFR_FULL) if args.model == "vspbfr" else ("sd21", MIN_FREE_GB_SD21)
    scales = ["tiny"] + ([big] if (args.full if args.model == "vspbfr" else args.sd21) else [])
    for scale in scales:
        if scale == big and device.type == "cpu" and _free_gb() < need:
            skipped.append(f"{big} on CPU skipped: {_free_gb():.1f} GB available, needs {need} GB")
            print(skipped[-1], file=sys.stderr)
            continue
        for batch in args.batches:
            cmd = [sys.executable, __file__, "--one", f"{scale}:{batch}", "--model", args.model, "--device",
                   args.device, "--dtype", args.dtype, "--repeats", str(args.repeats), "--refs", str(args.refs),
                   "--threads", str(args.threads)]
            run = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if run.returncode != 0:
                tail = (run.stderr.strip().splitlines() or ["?"])[-1]
                skipped.append(f"{scale} batch {batch} failed: {tail}")
                print(skipped[-1], file=sys.stderr)
                continue
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(json.dumps({"results": results, "skipped": skipped}, indent=1))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
