"""onnxruntime against torch float32 on this CPU for benchmarks/infer.py `--onnx` (HonestFace and VSPBFR; the method
is in infer.py's docstring). Imported by benchmarks/infer.py; not a script of its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from infer_common import input_faces, psnr


@torch.no_grad()
def measure_onnx(folder: Path, batch: int, repeats: int, refs: int, threads: int, channels_last: bool = True) -> dict:
    """onnxruntime (CPU provider) vs torch float32 on this CPU, side by side: seconds per face of the aligned-mode
    pipeline at `batch` (median of `repeats` after one warm-up), same faces and references, and the PSNR between the
    two restorations. The folder is exported once into <folder>/onnx (`honestface.export.export_onnx`)."""
    from honestface.export import OnnxPipeline, export_onnx
    from honestface.models import HonestFace
    from honestface.pipelines import HonestFacePipeline, ReferencePool

    export = folder / "onnx"
    t0 = time.perf_counter()
    if not (export / "onnx_manifest.json").is_file():
        export_onnx(folder, export, overwrite=True)
    export_s = time.perf_counter() - t0
    torch_pipe = HonestFacePipeline(HonestFace.from_pretrained(folder, with_discriminator=False))
    torch_pipe.merge_lora()
    if channels_last:
        torch_pipe.enable_channels_last()
    torch_pipe.enable_vae_slicing()  # as scripts/infer.py on a CPU
    onnx_pipe = OnnxPipeline.from_pretrained(export, detector=None, providers=["CPUExecutionProvider"],
                                             threads=threads or None)
    faces, ref_faces = input_faces(torch_pipe.resolution, batch, refs)
    references = ReferencePool(ref_faces) if torch_pipe.model.use_ide else None
    seconds, out = _time_pipelines({"torch_fp32": torch_pipe, "onnxruntime": onnx_pipe}, faces, batch, repeats,
                                   references=references)
    return _onnx_row(batch, export_s, seconds, out)


def _time_pipelines(pipes: dict, faces: list[np.ndarray], batch: int, repeats: int, **call: object
                    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Seconds per face (median of `repeats` after one warm-up) and the first face's output of each pipeline."""
    out, seconds = {}, {}
    for name, pipe in pipes.items():
        out[name] = pipe(faces, batch_size=batch, **call).images[0]  # warm-up (+ reference cache)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pipe(faces, batch_size=batch, **call)
            runs.append((time.perf_counter() - t0) / batch)
        seconds[name] = round(float(np.median(runs)), 4)
    return seconds, out


def _onnx_row(batch: int, export_s: float, seconds: dict[str, float], out: dict[str, np.ndarray]) -> dict:
    return {"batch": batch, "export_seconds": round(export_s, 2), "torch_fp32_s_per_face": seconds["torch_fp32"],
            "onnxruntime_s_per_face": seconds["onnxruntime"],
            "speedup": round(seconds["torch_fp32"] / max(seconds["onnxruntime"], 1e-9), 2),
            "psnr_onnx_vs_torch_db": round(psnr(out["onnxruntime"], out["torch_fp32"]), 2)}


@torch.no_grad()
def measure_onnx_vspbfr(scale: str, batch: int, repeats: int, threads: int, cache: Path) -> dict:
    """VSPBFR: onnxruntime (CPU provider) vs torch float32 seconds per face of the aligned-mode pipeline, as
    `measure_onnx`; the random-weight model is saved once to `cache` and exported once next to it."""
    from honestface.export import OnnxPipeline, export_onnx
    from honestface.models.vspbfr import build_vspbfr
    from honestface.pipelines import VSPBFRPipeline

    folder = cache / f"vspbfr-{scale}-seed0-v1"
    if not (folder / "vspbfr_config.json").is_file():
        build_vspbfr(scale).save_pretrained(folder)
    export = folder / "onnx"
    t0 = time.perf_counter()
    if not (export / "onnx_manifest.json").is_file():
        export_onnx(folder, export, overwrite=True)
    export_s = time.perf_counter() - t0
    pipes = {"torch_fp32": VSPBFRPipeline.from_pretrained(folder, detector=None),
             "onnxruntime": OnnxPipeline.from_pretrained(export, detector=None, providers=["CPUExecutionProvider"],
                                                         threads=threads or None)}
    faces, _ = input_faces(pipes["torch_fp32"].resolution, batch, 0)
    seconds, out = _time_pipelines(pipes, faces, batch, repeats)
    return {"model": "vspbfr", "scale": scale, **_onnx_row(batch, export_s, seconds, out)}
