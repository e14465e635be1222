"""GroupNorm then SiLU, eager against one kernel fused by torch.compile (inductor), on the VAE's and the VRE's maps.

    python benchmarks/norm_act_fusion.py                  # bf16, CPU, the five map sizes of a 512 px face
    python benchmarks/norm_act_fusion.py --sizes 8x16     # a tiny map (the smoke test)

Why (issue 17): in the VAE and the VRE at a 512 px face the GroupNorm and SiLU passes between the convolutions take
12-27% of the time (`benchmarks/infer.py`, `op_seconds_per_face`). Fusing the two into one pass over the map is what
a compiler can do for them, so this measures whether torch's own compiler does it faster than eager PyTorch on this
machine before anyone writes a kernel by hand.

Method (our choice): for each (channels, side) map, channels-last in `--dtype`, 32 groups as in the SD VAE and the
VRE, the heap keeping freed buffers as in the pipeline (`honestface.models.loading.reuse_large_allocations`):
`torch.compile(fn, dynamic=False)` of `silu(group_norm(x))`, compiled once (`compile_seconds`); then eager and
compiled timed in alternation, `--repeats` rounds after one warm-up each, and `ratio` is the median over the rounds
of compiled / eager (below 1: the fused kernel is faster). `max_abs_difference` is between the two outputs. Where
inductor cannot compile on the machine (no C++ compiler), the row says so in `error` and the rest still run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SIZES_512 = ("64x512", "128x512", "256x256", "512x128", "512x64")  # (channels x side) of the VRE and the VAE


def norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The pass pair between two convolutions of a ResNet block of the SD VAE and of the VRE."""
    return F.silu(F.group_norm(x, 32, weight, bias, 1e-6))


def _seconds(fn: object, *args: torch.Tensor) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


@torch.inference_mode()
def compare(channels: int, side: int, dtype: torch.dtype, repeats: int) -> dict:
    """One map: eager and compiled milliseconds (medians), their paired ratio, the compile time and the difference."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, side, side, generator=g).to(dtype).to(memory_format=torch.channels_last)
    w, b = torch.randn(channels, generator=g).to(dtype), torch.randn(channels, generator=g).to(dtype)
    row: dict = {"channels": channels, "side": side}
    fused = torch.compile(norm_act, dynamic=False)
    try:
        row["compile_seconds"] = round(_seconds(fused, x, w, b), 2)
    except (RuntimeError, OSError) as e:  # inductor needs a working C++ toolchain (its errors are RuntimeErrors)
        return row | {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    norm_act(x, w, b)  # warm-up of the eager side
    eager, compiled = [], []
    for _ in range(repeats):
        eager.append(_seconds(norm_act, x, w, b))
        compiled.append(_seconds(fused, x, w, b))
    difference = (fused(x, w, b).float() - norm_act(x, w, b).float()).abs().max().item()
    return row | {"eager_ms": round(statistics.median(eager) * 1e3, 2),
                  "compiled_ms": round(statistics.median(compiled) * 1e3, 2),
                  "ratio": round(statistics.median(c / e for c, e in zip(compiled, eager, strict=True)), 3),
                  "max_abs_difference": difference}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sizes", nargs="+", default=list(SIZES_512), help="maps as CHANNELSxSIDE (channels: 32k)")
    args = p.parse_args(argv)
    sizes = []
    for s in args.sizes:
        try:
            c, side = (int(v) for v in s.split("x"))
        except ValueError:
            p.error(f"--sizes: {s!r} is not CHANNELSxSIDE, e.g. 128x512")
        if c % 32:
            p.error(f"--sizes: {s!r} has {c} channels, not a multiple of the 32 groups")
        sizes.append((c, side))
    from honestface.models.loading import reuse_large_allocations

    reuse = reuse_large_allocations()
    rows = [compare(c, side, _DTYPES[args.dtype], args.repeats) for c, side in sizes]
    print(json.dumps({"device": "cpu", "dtype": args.dtype, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "reuse_cpu_memory": reuse, "maps": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
