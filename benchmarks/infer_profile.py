"""Where a network stage's time goes: runs under torch.profiler, each operator's own (self) time put in a kind.

Imported by benchmarks/infer.py (`op_seconds_per_face` in its JSON); not a script of its own.

Why (issue 17): a stage's `fraction_of_conv` compares its counted FLOPs with the conv3x3 yardstick, and the counter
gives elementwise work zero FLOPs. Splitting the time into the kernels that do the counted FLOPs (convolutions,
matmuls / linear layers, attention) and the rest (normalisation, activations, elementwise arithmetic, copies) says
which of the two holds a stage below the goal: `infer_targets.add_roofline` derives `gemm_kernel_fraction` (the
fraction the stage would reach if the rest took no time) and `other_ops_share`.

Our choices:
- Kinds by operator name (`KINDS`, first match wins); an operator none names is `other`.
- Self time: an operator's time minus that of the operators it calls, so nothing counts twice. On a GPU the kernels'
  device time (`self_device_time_total`) replaces the host time.
- Three profiled runs after the stage's timed runs, each with the conv3x3 yardstick timed right before it
  (`conv3x3_gflops`), so that `gemm_kernel_fraction` pairs each profile with the machine's speed of that moment;
  `infer_targets` takes the median over the runs (one run alone measured 0.59 and 1.00 for the same UNet on
  2026-12-07, when the yardstick dipped to half its speed just before one of them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from roofline import ConvBeside

# (kind, operator-name test): the name without its namespace and trailing underscore ("aten::silu_" -> "silu")
KINDS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("attention", lambda n: "attention" in n),
    ("convolution", lambda n: "convolution" in n),
    ("matmul", lambda n: n in {"mm", "bmm", "addmm", "baddbmm", "matmul", "linear", "_linear_pointwise"}),
    ("normalization", lambda n: "norm" in n),
    ("activation", lambda n: n in {"silu", "gelu", "sigmoid", "relu", "tanh", "softmax", "_softmax", "clamp"}),
    ("copy", lambda n: n in {"copy", "clone", "contiguous", "cat", "_to_copy", "to", "pad", "constant_pad_nd",
                              "upsample_nearest2d", "_upsample_nearest_exact2d", "stack"}),
    ("elementwise", lambda n: n in {"add", "sub", "mul", "div", "addcmul", "neg", "rsub", "pow", "exp"}),
)


def op_kind(name: str) -> str:
    """An operator's kind from its profiler name, e.g. "aten::native_group_norm" -> "normalization"."""
    base = name.rsplit("::", 1)[-1].rstrip("_")
    return next((kind for kind, test in KINDS if test(base)), "other")


@torch.no_grad()
def op_seconds(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Seconds of one call of `fn` per operator kind (self time, see the module docstring); only kinds present."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize(device)
    seconds: dict[str, float] = {}
    for event in prof.key_averages():
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if us > 0:
            kind = op_kind(event.key)
            seconds[kind] = seconds.get(kind, 0.0) + us / 1e6
    return seconds


def profile_stage(fn: Callable[[], object], device: torch.device, conv: ConvBeside, runs: int = 3) -> dict:
    """`runs` profiled calls of `fn`, each right after the conv3x3 yardstick:
    {"conv3x3_gflops": [GFLOP/s per run], "op_seconds": [{kind: seconds} per run]}."""
    out: dict[str, list] = {"conv3x3_gflops": [], "op_seconds": []}
    for _ in range(runs):
        out["conv3x3_gflops"].append(round(conv.gflops(), 1))
        out["op_seconds"].append({k: round(v, 5) for k, v in sorted(op_seconds(fn, device).items())})
    return out
