"""What benchmarks/infer.py and its helpers share: the input faces, the file read yardstick, peak memory, PSNR, the
time spent inside a model's networks, the OSDFace-files conversion and the machine's description.

Imported by benchmarks/infer.py, infer_onnx.py and infer_vspbfr.py; not a script of its own.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def peak_memory(device: torch.device) -> dict:
    """Peak memory of this process: CUDA max allocated on a GPU, else the peak RSS."""
    if device.type == "cuda":
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "peak_memory_kind": "cuda_max_allocated"}
    return {"peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_memory_kind": "rss"}


def faces_tensor(pipe: Any, images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (S, S, 3) faces -> (N, 3, S, S) in [-1, 1] on the pipeline's device and dtype, converted as the pipeline
    converts its inputs (`honestface.models.native.face_tensor` at its resolution and resize)."""
    from honestface.models.native import face_tensor

    return torch.stack([face_tensor(x, pipe.resolution, pipe.resize) for x in images]).to(pipe.device, pipe.dtype)


def input_faces(size: int, n: int, refs: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n LQ faces and K references (uint8 (S, S, 3)): jittered views of the bundled aligned Tom Hanks face (112 px,
    so already low quality at 512), the references from other seeds."""
    import cv2

    from honestface.data.samples import tom_hanks_aligned
    from honestface.data.views import augmented_views

    face = cv2.resize(tom_hanks_aligned(), (size, size), interpolation=cv2.INTER_CUBIC)
    return augmented_views(face, n, seed=1), augmented_views(face, refs, seed=2)


def read_seconds(folder: Path) -> tuple[float, float]:
    """(seconds to read every weights file of `folder` into memory once, their size in MB)."""
    t0, total = time.perf_counter(), 0
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            while chunk := fh.read(64 << 20):
                total += len(chunk)
    return time.perf_counter() - t0, total / 2**20


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two uint8 (H, W, 3) images, with the library's metric."""
    from honestface.metrics.iqa import psnr

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(2, 0, 1)[None]  # (1, 3, H, W)

    return float(psnr(t(a), t(b), data_range=255.0)[0])


def start_measuring(device: torch.device, reuse_memory: bool) -> bool:
    """After loading, as scripts/infer.py does: on a CPU the heap keeps freed activation buffers
    (`infer.reuse_cpu_memory`, unless `reuse_memory` is False); on a GPU the peak memory counter restarts.
    Returns whether the heap reuse is on."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if device.type != "cpu" or not reuse_memory:
        return False
    from honestface.models.loading import reuse_large_allocations

    return reuse_large_allocations()


@contextmanager
def time_inside_networks(model: torch.nn.Module, device: torch.device) -> Iterator[list[float]]:
    """While inside, every call of a HonestFace model's networks (VAE encoder, VRE, IDE and fusion, UNet step, VAE
    decoder) is timed (CUDA synchronised) and its seconds appended to the yielded list; the model is left as it was.
    A pipeline's time minus this list's sum is its time outside the networks, both from the same runs, so it holds
    when the machine's speed changes between measurements (summing stages timed at other moments gave negative
    overheads on this CPU)."""
    spent: list[float] = []

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            spent.append(time.perf_counter() - t0)
            return out
        return call

    gen = model.generator
    # instance attributes shadow the methods; a module's `forward` is looked up on the instance by nn.Module
    owners = [(gen, "encode"), (gen, "denoise"), (gen, "decode"), (model.vre, "forward")]
    if getattr(model, "use_ide", False):
        owners += [(model, "_identity_tokens"), (model.fusion, "forward")]
    for owner, name in owners:
        setattr(owner, name, wrap(getattr(owner, name)))
    try:
        yield spent
    finally:
        for owner, name in owners:
            delattr(owner, name)


def convert_osdface_files(home: Path, dtype: torch.dtype) -> dict:
    """Write OSDFace-format files (once) and convert them afresh as `--model osdface` does on first use."""
    import shutil

    from osdface_files import write_osdface_files

    from honestface.models.released import released_folder

    write_osdface_files(home)
    shutil.rmtree(home / "converted", ignore_errors=True)  # measure the conversion itself, not the cache
    t0 = time.perf_counter()
    folder = released_folder("osdface", home=home, dtype=dtype, quiet=True)
    return {"folder": str(folder), "convert_seconds": round(time.perf_counter() - t0, 2)} | peak_memory(
        torch.device("cpu"))


def machine_info() -> dict:
    """The CPU model, core count, torch and Python versions, for the benchmark's JSON."""
    import platform

    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
