"""The machine's measured throughput and a stage's FLOPs: the yardstick the inference benchmark divides by.

    python benchmarks/roofline.py                  # bf16 on the CPU: conv 3x3 and matmul GFLOP/s, as JSON
    python benchmarks/roofline.py --dtype fp32 --device cuda

Method (our choice, issue 17): absolute CPU seconds move between machines and days, so a stage's speed is reported
as a fraction of what this machine does in the same run on the two operations that dominate the models:
- `conv3x3`: a 3x3 convolution, 320 -> 320 channels on a 64x64 map, channels-last (the UNet's first level at a
  512 px face; the VAE's convolutions are of the same kind), 2 * 64 * 64 * 320 * 320 * 9 FLOPs per call;
- `matmul`: a 4096 x 4096 by 4096 x 4096 product, 2 * 4096^3 FLOPs.
The passes between them, which the FLOP counter counts as zero, on a (1, 128, 256, 256) channels-last map (in bf16
small enough for glibc to serve from its heap, as the pipeline's activations are under `reuse_large_allocations`):
`copy_gbytes_per_s` (bytes read and written by a copy), `silu_gelements_per_s` and
`group_norm_gelements_per_s` (32 groups).
Each runs once to warm up, then `repeats` times; the median time gives GFLOP/s. `ConvBeside` times the same
convolution right before each timed run of a stage, the yardstick benchmarks/infer.py divides each stage by. FLOPs of a stage are counted by
torch's own `torch.utils.flop_counter.FlopCounterMode` (convolutions, matmuls, attention; elementwise work counts
zero), so a fraction below 1 also absorbs the normalisation, activation and memory traffic the counter ignores.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, object]:
    """Median seconds of `fn` over `repeats` runs after one warm-up (CUDA synchronised), and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


class ConvBeside:
    """The `conv3x3` yardstick (see the module docstring) timed just before each timed run of a stage, so that a
    stage's fraction compares two measurements seconds apart: on a shared CPU whose speed drifts within a run
    (measured 2026-12-07: 690-845 GFLOP/s between runs of the same day), a yardstick taken once at the start moved
    the stage fractions by up to 0.25."""

    FLOPS = 2 * 64 * 64 * 320 * 320 * 9

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(1, 320, 64, 64, generator=g).to(device, dtype).to(memory_format=torch.channels_last)
        self.conv = torch.nn.Conv2d(320, 320, 3, padding=1).to(device, dtype).to(memory_format=torch.channels_last)
        self.device = device

    def timed(self, fn: Callable[[], object], repeats: int) -> tuple[float, object, float]:
        """(median seconds of `fn` over `repeats` runs after one warm-up, its last result, the median conv3x3
        GFLOP/s measured right before each of those runs, each the median of 5 calls)."""
        times, result, gflops = self.runs(fn, repeats)
        return statistics.median(times), result, statistics.median(gflops)

    @torch.no_grad()
    def gflops(self) -> float:
        """The yardstick's GFLOP/s now: the median of 5 calls (one call alone has outliers of +-70%)."""
        return self.FLOPS / timed(lambda: self.conv(self.x), self.device, 5)[0] / 1e9

    @torch.no_grad()
    def runs(self, fn: Callable[[], object], repeats: int) -> tuple[list[float], object, list[float]]:
        """`timed`, run by run: (the seconds of each of the `repeats` runs after one warm-up, the last result, the
        conv3x3 GFLOP/s measured right before each run)."""
        result, times, gflops = fn(), [], []
        for _ in range(repeats):
            gflops.append(self.gflops())
            _sync(self.device)
            t0 = time.perf_counter()
            result = fn()
            _sync(self.device)
            times.append(time.perf_counter() - t0)
        return times, result, gflops


@torch.no_grad()
def machine_throughput(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of this machine on `conv3x3` and `matmul`, and the speed of a copy, a SiLU and a GroupNorm (see the
    module docstring), measured now."""
    conv = ConvBeside(device, dtype)  # the same convolution the stages are divided by
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4096, 4096, generator=g).to(device, dtype)
    b = torch.randn(4096, 4096, generator=g).to(device, dtype)
    conv_s = timed(lambda: conv.conv(conv.x), device, repeats)[0]
    mm_s = timed(lambda: a @ b, device, repeats)[0]
    # the passes between the GEMMs, on a map small enough (16 MiB in bf16) for glibc to reuse its buffers
    m = torch.randn(1, 128, 256, 256, generator=g).to(device, dtype).to(memory_format=torch.channels_last)
    out, w = torch.empty_like(m), torch.ones(128, device=device, dtype=dtype)
    bias = torch.zeros_like(w)
    copy_s = timed(lambda: out.copy_(m), device, repeats)[0]
    silu_s = timed(lambda: torch.nn.functional.silu(m, inplace=False), device, repeats)[0]
    norm_s = timed(lambda: torch.nn.functional.group_norm(m, 32, w, bias, 1e-6), device, repeats)[0]
    return {"conv3x3_gflops": round(ConvBeside.FLOPS / conv_s / 1e9, 1),
            "matmul_gflops": round(2 * 4096 ** 3 / mm_s / 1e9, 1),
            "copy_gbytes_per_s": round(2 * m.numel() * m.element_size() / copy_s / 1e9, 2),
            "silu_gelements_per_s": round(m.numel() / silu_s / 1e9, 3),
            "group_norm_gelements_per_s": round(m.numel() / norm_s / 1e9, 3), "threads": torch.get_num_threads()}


def _packed_conv_flops(x_shape: torch.Size, w_shape: torch.Size, *args: object, out_shape: torch.Size,
                       **kwargs: object) -> int:
    """oneDNN's packed convolution (honestface.models.cpu_prepack), counted by torch's own convolution formula."""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape))


def _packed_linear_flops(x_shape: torch.Size, w_shape: torch.Size, *args: object, out_shape: torch.Size,
                         **kwargs: object) -> int:
    """oneDNN's packed linear layer: 2 * output elements * in_features."""
    return 2 * math.prod(out_shape) * w_shape[1]


@torch.no_grad()
def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` as torch's FlopCounterMode counts them; layers packed for oneDNN count as their plain
    convolution / linear twins would."""
    from torch.utils.flop_counter import FlopCounterMode

    packed = {}
    if hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        packed = {torch.ops.mkldnn._convolution_pointwise: _packed_conv_flops,
                  torch.ops.mkldnn._linear_pointwise: _packed_linear_flops}
    counter = FlopCounterMode(display=False, custom_mapping=packed)
    with counter:
        fn()
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch default")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = machine_throughput(torch.device(args.device), _DTYPES[args.dtype], args.repeats)
    print(json.dumps({"device": args.device, "dtype": args.dtype, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
