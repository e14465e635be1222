"""Throughput of the batched torch degradation vs a per-image numpy/OpenCV loop of the same classic chain.

    python benchmarks/degradation.py [batch_size=8] [iterations=3] [preset=daefr] [size=512] [device=cpu] [threads]

Prints one JSON object: images/s of `honestface.data.degradation.Degradation` (whole batch per call) and of the
reference loop (what GFPGAN-style datasets run per image: the same kernel family by cv2.GaussianBlur / filter2D,
cv2.resize INTER_LINEAR down and back up, numpy Gaussian noise, cv2.imencode/imdecode JPEG), on random crops of
skimage's astronaut resized to `size`. For a second-order preset only the torch path is timed (the reference
implements the classic chain). `threads` sets torch's and OpenCV's threads (default: each library's own choice;
1 is what a DataLoader worker runs with). Both use the preset's ranges; each runs a warm-up then `iterations` timed batches, and the
median batch counts (the best is reported too: the machine may be shared).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from honestface.data.degradation import Degradation, sample_seed
from honestface.data.degradation_presets import preset_params


def _blur(img: np.ndarray, rng: np.random.Generator, size_range: tuple[int, int], sigma: tuple[float, float]
          ) -> np.ndarray:
    """basicsr-style iso/aniso Gaussian blur (p 0.5/0.5) of a random odd size, by the fastest OpenCV route for
    each: cv2.GaussianBlur (separable) for isotropic kernels, cv2.filter2D for rotated anisotropic ones."""
    lo, hi = size_range
    size = int(rng.choice(np.arange(lo + (lo + 1) % 2, hi + 1, 2)))
    sx = max(rng.uniform(*sigma), 1e-3)
    if rng.uniform() < 0.5:
        return cv2.GaussianBlur(img, (size, size), sx, borderType=cv2.BORDER_REFLECT_101)
    sy, theta = max(rng.uniform(*sigma), 1e-3), rng.uniform(-math.pi, math.pi)
    ax = np.arange(size, dtype=np.float64) - size // 2
    xx, yy = np.meshgrid(ax, ax)
    u = np.cos(theta) * xx + np.sin(theta) * yy
    v = -np.sin(theta) * xx + np.cos(theta) * yy
    k = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return cv2.filter2D(img, -1, (k / k.sum()).astype(np.float32))


def opencv_degrade(img: np.ndarray, rng: np.random.Generator, p: dict) -> np.ndarray:
    """One image (H, W, 3) float32 RGB in [0, 1] -> LQ, the classic chain with numpy / OpenCV."""
    h, w = img.shape[:2]
    x = _blur(img, rng, p["kernel_size"], p["blur_sigma"])
    scale = rng.uniform(*p["downsample"])
    x = cv2.resize(x, (max(1, int(w // scale)), max(1, int(h // scale))), interpolation=cv2.INTER_LINEAR)
    x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(rng.uniform(*p["noise"]) / 255)
    x8 = (np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    quality = int(rng.integers(p["jpeg"][0], p["jpeg"][1] + 1))
    _, enc = cv2.imencode(".jpg", x8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    x = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
    x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    return (np.clip(x, 0, 1) * 255).round() / 255


def _images(n: int, size: int) -> np.ndarray:
    from skimage import data

    rng = np.random.default_rng(0)
    src = data.astronaut().astype(np.float32) / 255
    out = []
    for _ in range(n):
        y, x = rng.integers(0, 129, 2)
        out.append(cv2.resize(src[y : y + 384, x : x + 384], (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _time(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str]) -> dict:
    batch = int(argv[0]) if len(argv) > 0 else 8
    iterations = int(argv[1]) if len(argv) > 1 else 3
    preset = argv[2] if len(argv) > 2 else "daefr"
    size = int(argv[3]) if len(argv) > 3 else 512
    device = argv[4] if len(argv) > 4 else "cpu"
    if len(argv) > 5:  # e.g. 1: what one DataLoader worker gets
        torch.set_num_threads(int(argv[5]))
        cv2.setNumThreads(int(argv[5]))
    params = preset_params(preset)
    imgs = _images(batch, size)
    hq = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(device)
    deg = Degradation(preset)
    step = iter(range(10**9))

    def run_torch() -> None:
        k = next(step)
        deg(hq, [sample_seed(0, i, k) for i in range(batch)])

    rng = np.random.default_rng(0)

    def run_opencv() -> None:
        for img in imgs:
            opencv_degrade(img, rng, params)

    # one block each: interleaving makes each library's idle worker threads (OpenMP spin-waits) slow the other
    times: dict[str, list[float]] = {}
    runs = [("torch", run_torch, device)] + ([("opencv", run_opencv, "cpu")] if params["chain"] == "classic" else [])
    for name, fn, dev in runs:
        fn()  # warm-up
        times[name] = [_time(fn, dev) for _ in range(iterations)]
    t_torch = float(np.median(times["torch"]))
    t_cv = float(np.median(times["opencv"])) if "opencv" in times else None
    return {
        "preset": preset, "batch_size": batch, "image_size": size, "iterations": iterations, "device": device,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "cv2_threads": cv2.getNumThreads(),
        "torch": torch.__version__, "opencv": cv2.__version__, "machine": platform.machine(),
        "torch_batched_images_per_s": round(batch / t_torch, 2),
        "opencv_loop_images_per_s": round(batch / t_cv, 2) if t_cv else None,
        "speedup": round(t_cv / t_torch, 2) if t_cv else None,
        "torch_best_images_per_s": round(batch / min(times["torch"]), 2),
        "opencv_best_images_per_s": round(batch / min(times["opencv"]), 2) if t_cv else None,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
