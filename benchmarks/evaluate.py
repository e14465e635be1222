"""Throughput of our batched IQA suite (`IQAMetrics`) vs pyiqa's metrics called one image at a time, same values.

    python benchmarks/evaluate.py [num_images=16] [size=256] [batch_size=16] [iterations=2] [device=cpu] [threads]

Prints one JSON object. Per metric (psnr, ssim, lpips, lpips_vgg, dists): images/s of our `IQAMetrics([name])`
on the whole set in batches of `batch_size`, images/s of pyiqa's metric of that name (`pyiqa.create_metric`,
default options) called as a pyiqa user would, `metric(x_i, y_i)` for one image at a time, their ratio
(`speedup` = pyiqa seconds / our seconds) and the largest absolute difference of the values. `suite`: one
`IQAMetrics` with all five metrics vs a loop calling the five pyiqa metrics on each image. Images: random square
crops of the bundled photos (`honestface.data.samples`) resized to `size`, GT = the crop and restored = a mild
classic degradation of it (`honestface.data.degradation.Degradation`: blur sigma 0.5-1.5, downsampling 1-2x,
noise 0-5/255, JPEG 80-95), both rounded to the uint8 grid as if read from files.

No ImageNet weights can be downloaded here, so the networks get randomly initialised backbones (torchvision
VGG-16 / AlexNet, DISTS alpha/beta) saved to a temporary folder: ours reads them as explicit weight paths, pyiqa
finds the same files in its download caches (torch hub dir and pyiqa's cache dir point into that folder; the
LPIPS v0.1 heads are the lpips wheel's, byte-identical to pyiqa's files). Same cost as the real networks,
meaningless values. Each timing runs a warm-up, then the median of `iterations` runs counts (ours and pyiqa's
runs interleaved). `threads` sets
torch's intra-op threads (default: torch's choice).

`roofline` says how far any implementation of the same arithmetic could go on this machine: the suite's FLOPs per
image (torch's `FlopCounterMode` on one image through each side), the machine's fp32 3x3-convolution throughput
measured in the same run (`benchmarks/roofline.py`), the fraction of it each side reaches, and `speedup_ceiling` =
pyiqa's seconds per image / (our FLOPs per image / that throughput): the largest speedup over pyiqa's loop that
the same FLOPs at that throughput allow. The throughput is a large, channels-last convolution, the kindest case for
the CPU, so the ceiling is generous.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roofline import count_flops, machine_throughput

from honestface.data.degradation import Degradation, sample_seed
from honestface.data.samples import SAMPLES, load_sample
from honestface.metrics.iqa import IQAMetrics

METRICS = {"psnr": "psnr", "ssim": "ssim", "lpips": "lpips", "lpips_vgg": "lpips-vgg", "dists": "dists"}  # ours: pyiqa
NETWORKS = ("lpips", "lpips_vgg", "dists")


def make_images(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(gt, restored), each (n, 3, size, size) in [0, 1] on the uint8 grid: crops of the bundled photos and a
    mild degradation."""
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
    lq = deg(gt, seeds=[sample_seed(seed, i) for i in range(n)]).lq
    return (gt * 255).round() / 255, (lq.clamp(0, 1) * 255).round() / 255  # uint8-derived, as read from files


def random_weights(folder: Path) -> dict[str, str]:
    """Random torchvision VGG-16 / AlexNet and DISTS alpha/beta, as registry-style weight files."""
    import torchvision

    torch.manual_seed(0)
    paths = {"vgg16_imagenet": folder / "vgg16.pth", "alexnet_imagenet": folder / "alexnet.pth",
             "dists_pyiqa": folder / "dists.pth"}
    torch.save(torchvision.models.vgg16().state_dict(), paths["vgg16_imagenet"])
    torch.save(torchvision.models.alexnet().state_dict(), paths["alexnet_imagenet"])
    n = 1475  # DISTS: 3 + 64 + 128 + 256 + 512 + 512 channels
    torch.save({"alpha": torch.rand(1, n, 1, 1) * 0.1, "beta": torch.rand(1, n, 1, 1) * 0.1}, paths["dists_pyiqa"])
    return {k: str(v) for k, v in paths.items()}


@contextlib.contextmanager
def pyiqa_offline(weights: dict[str, str], cache: Path):
    """pyiqa and torchvision find `weights` under the names they download to, in caches under `cache`."""
    import lpips
    import pyiqa.utils.download_util as dl

    hub = cache / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "pyiqa").mkdir()
    shutil.copyfile(weights["vgg16_imagenet"], hub / "checkpoints" / "vgg16-397923af.pth")
    shutil.copyfile(weights["alexnet_imagenet"], hub / "checkpoints" / "alexnet-owt-7be5be79.pth")
    shutil.copyfile(weights["dists_pyiqa"], hub / "pyiqa" / "DISTS_weights-f5e65c96.pth")
    heads = Path(lpips.__file__).parent / "weights" / "v0.1"
    shutil.copyfile(heads / "alex.pth", hub / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth")
    shutil.copyfile(heads / "vgg.pth", hub / "pyiqa" / "LPIPS_v0.1_vgg-a78928a0.pth")
    saved = torch.hub._hub_dir, dl.DEFAULT_CACHE_DIR
    torch.hub._hub_dir, dl.DEFAULT_CACHE_DIR = str(hub), str(hub / "pyiqa")
    try:
        yield
    finally:
        torch.hub._hub_dir, dl.DEFAULT_CACHE_DIR = saved


def timed_pair(ours, theirs, iterations: int) -> tuple[float, float, object, object]:
    """Median seconds of `iterations` runs of each (after one warm-up each), runs interleaved so that a change of
    machine load hits both alike; and the last results."""
    a, b = ours(), theirs()  # warm-up
    t_a, t_b = [], []
    for _ in range(iterations):
        t = time.perf_counter()
        a = ours()
        t_a.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = theirs()
        t_b.append(time.perf_counter() - t)
    return float(np.median(t_a)), float(np.median(t_b)), a, b


def main(num_images: int = 16, size: int = 256, batch_size: int = 16, iterations: int = 2, device: str = "cpu",
         threads: int | None = None) -> dict:
    try:
        import pyiqa
    except ImportError as err:
        raise SystemExit(f"benchmarks/evaluate.py compares with pyiqa: pip install -e .[iqa] ({err})") from err
    if threads:
        torch.set_num_threads(threads)
    gt, restored = make_images(num_images, size)
    gt, restored = gt.to(device), restored.to(device)
    result: dict = {"num_images": num_images, "size": size, "batch_size": batch_size, "iterations": iterations,
                    "device": device, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or
                    platform.machine(), "torch": torch.__version__, "pyiqa": pyiqa.__version__, "metrics": {}}
    with tempfile.TemporaryDirectory() as tmp:
        weights = random_weights(Path(tmp))
        with pyiqa_offline(weights, Path(tmp) / "cache"), contextlib.redirect_stdout(sys.stderr):  # pyiqa prints
            theirs = {name: pyiqa.create_metric(ref, device=device) for name, ref in METRICS.items()}
        seconds: dict[str, dict[str, float]] = {}
        for name in METRICS:
            ours = IQAMetrics([name], device=device, weights=weights, batch_size=batch_size)

            def loop(metric=theirs[name]) -> torch.Tensor:
                with torch.no_grad():
                    return torch.stack([metric(restored[i : i + 1], gt[i : i + 1]).flatten()[0]
                                        for i in range(num_images)])

            t_ours, t_pyiqa, v_ours, v_pyiqa = timed_pair(lambda ours=ours, name=name: ours(restored, gt)[name],
                                                          loop, iterations)
            seconds[name] = {"ours": t_ours, "pyiqa": t_pyiqa}
            diff = (v_ours.double().cpu() - v_pyiqa.double().cpu()).abs().max().item()
            result["metrics"][name] = {"ours_batched_images_per_s": round(num_images / t_ours, 2),
                                       "pyiqa_per_image_images_per_s": round(num_images / t_pyiqa, 2),
                                       "speedup": round(t_pyiqa / t_ours, 2), "max_abs_diff": float(f"{diff:.3g}"),
                                       "weights": "random backbone" if name in NETWORKS else "none"}
            print(name, result["metrics"][name], file=sys.stderr, flush=True)
        suite = IQAMetrics(list(METRICS), device=device, weights=weights, batch_size=batch_size)

        def loops() -> None:  # what a pyiqa user runs: every metric on every image
            with torch.no_grad():
                for i in range(num_images):
                    for metric in theirs.values():
                        metric(restored[i : i + 1], gt[i : i + 1])

        t_suite, t_pyiqa, _, _ = timed_pair(lambda: suite(restored, gt), loops, iterations)
        one = IQAMetrics(list(METRICS), device=device, weights=weights, batch_size=1)
        flops_ours = count_flops(lambda: one(restored[:1], gt[:1]))

        def one_loop() -> None:
            for metric in theirs.values():
                metric(restored[:1], gt[:1])

        flops_pyiqa = count_flops(one_loop)
    result["suite"] = {"metrics": list(METRICS), "ours_batched_images_per_s": round(num_images / t_suite, 2),
                       "pyiqa_per_image_images_per_s": round(num_images / t_pyiqa, 2),
                       "speedup": round(t_pyiqa / t_suite, 2),
                       "max_abs_diff": max(m["max_abs_diff"] for m in result["metrics"].values())}
    peak = machine_throughput(torch.device(device), torch.float32)["conv3x3_gflops"]  # GFLOP/s, measured now
    per_image = {"ours": t_suite / num_images, "pyiqa": t_pyiqa / num_images}  # seconds
    result["roofline"] = {
        "ours_gflop_per_image": round(flops_ours / 1e9, 2), "pyiqa_gflop_per_image": round(flops_pyiqa / 1e9, 2),
        "machine_fp32_conv3x3_gflops": peak,
        "ours_fraction_of_peak": round(flops_ours / 1e9 / per_image["ours"] / peak, 3),
        "pyiqa_fraction_of_peak": round(flops_pyiqa / 1e9 / per_image["pyiqa"] / peak, 3),
        "speedup_ceiling": round(per_image["pyiqa"] / (flops_ours / 1e9 / peak), 2)}
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
