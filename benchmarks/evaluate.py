"""Throughput of the batched IQA metric suite (`IQAMetrics` over whole batches) vs a per-image loop.

    python benchmarks/evaluate.py [num_images=16] [size=256] [batch_size=16] [iterations=2] [device=cpu] [threads]

Prints one JSON object: images/s per metric and for the whole suite, batched (one call on `batch_size` images) and
per image (one call per image, batch 1). Images: random square crops of the bundled photos
(`honestface.data.samples`) resized to `size`, with GT = the crop and restored = a mild classic degradation of it
(`honestface.data.degradation.Degradation`: blur sigma 0.5-1.5, downsampling 1-2x, noise 0-5/255, JPEG 80-95).
Metrics: the weight-free ones (psnr, ssim, psnr_y, ssim_y) and, since no ImageNet weights can be downloaded here,
LPIPS (VGG, Alex) and DISTS over randomly initialised backbones saved to a temporary folder and passed as explicit
weight paths (same cost as the real networks, meaningless values). Each timing runs a warm-up, then the median
of `iterations` runs counts. `threads` sets torch's intra-op threads (default: torch's choice).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from honestface.data.degradation import Degradation, sample_seed
from honestface.data.samples import SAMPLES, load_sample
from honestface.metrics.iqa import IQAMetrics

FREE = ["psnr", "ssim", "psnr_y", "ssim_y"]
NETWORKS = ["lpips_vgg", "lpips_alex", "dists"]


def make_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(gt, restored), each (n, 3, size, size) in [0, 1]: crops of the bundled photos and a mild degradation."""
    rng = np.random.default_rng(seed)
    photos = [load_sample(name) for name in SAMPLES]
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]  # (H, W, 3) uint8
        h, w = img.shape[:2]
        side = int(min(h, w) * rng.uniform(0.5, 0.9))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        t = torch.from_numpy(np.ascontiguousarray(img[y : y + side, x : x + side])).permute(2, 0, 1)[None]
        crops.append(torch.nn.functional.interpolate(t.float() / 255, size=(size, size), mode="area"))
    gt = torch.cat(crops).clamp(0, 1)  # (n, 3, size, size)
    deg = Degradation("daefr", blur_sigma=(0.5, 1.5), downsample=(1.0, 2.0), noise=(0.0, 5.0), jpeg=(80, 95))
    return gt, deg(gt, seeds=[sample_seed(seed, i) for i in range(n)]).lq


def random_weights(folder: Path) -> dict[str, str]:
    """Random torchvision VGG-16 / AlexNet features and DISTS alpha/beta, as registry-style weight files."""
    import torchvision

    torch.manual_seed(0)
    paths = {"vgg16_imagenet": folder / "vgg16.pth", "alexnet_imagenet": folder / "alexnet.pth",
             "dists_pyiqa": folder / "dists.pth"}
    torch.save(torchvision.models.vgg16().state_dict(), paths["vgg16_imagenet"])
    torch.save(torchvision.models.alexnet().state_dict(), paths["alexnet_imagenet"])
    n = 1475  # DISTS: 3 + 64 + 128 + 256 + 512 + 512 channels
    torch.save({"alpha": torch.rand(1, n, 1, 1) * 0.1, "beta": torch.rand(1, n, 1, 1) * 0.1}, paths["dists_pyiqa"])
    return {k: str(v) for k, v in paths.items()}


def timed(fn, iterations: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(num_images: int = 16, size: int = 256, batch_size: int = 16, iterations: int = 2, device: str = "cpu",
         threads: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    gt, restored = make_images(num_images, size)
    gt, restored = gt.to(device), restored.to(device)
    result: dict = {"num_images": num_images, "size": size, "batch_size": batch_size, "iterations": iterations,
                    "device": device, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or
                    platform.machine(), "torch": torch.__version__, "metrics": {}}
    with tempfile.TemporaryDirectory() as tmp:
        weights = random_weights(Path(tmp))
        seconds: dict[str, dict[str, float]] = {}
        for name in FREE + NETWORKS:
            batched = IQAMetrics([name], device=device, weights=weights, batch_size=batch_size)
            single = IQAMetrics([name], device=device, weights=weights, batch_size=1)

            def per_image(single=single, name=name) -> None:
                for i in range(num_images):
                    single(restored[i : i + 1], gt[i : i + 1])[name]

            t_batch = timed(lambda batched=batched: batched(restored, gt), iterations)
            t_loop = timed(per_image, iterations)
            seconds[name] = {"batched": t_batch, "per_image": t_loop}
            result["metrics"][name] = {"batched_images_per_s": round(num_images / t_batch, 2),
                                       "per_image_images_per_s": round(num_images / t_loop, 2),
                                       "speedup": round(t_loop / t_batch, 2),
                                       "weights": "random backbone" if name in NETWORKS else "none"}
            print(name, result["metrics"][name], file=sys.stderr, flush=True)
    times = {mode: sum(t[mode] for t in seconds.values()) for mode in ("batched", "per_image")}  # run in turn
    result["suite"] = {"metrics": FREE + NETWORKS, "batched_images_per_s": round(num_images / times["batched"], 2),
                       "per_image_images_per_s": round(num_images / times["per_image"], 2),
                       "speedup": round(times["per_image"] / times["batched"], 2)}
    result["load_average"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return result


if __name__ == "__main__":
    names = ["num_images", "size", "batch_size", "iterations", "device", "threads"]
    kwargs = {}
    for arg in sys.argv[1:]:
        key, _, value = arg.partition("=")
        if key not in names or not value:
            raise SystemExit(f"usage: python benchmarks/evaluate.py [{'] ['.join(n + '=' for n in names)}]")
        kwargs[key] = value if key == "device" else int(value)
    print(json.dumps(main(**kwargs), indent=2))
