"""Named degradation presets, their validation, and per-image parameter sampling for `honestface.data.degradation`.

A preset is a plain dict of ranges and probabilities, so a config's `degradation.params` can override any key.
Ranges are `(low, high)` pairs, sampled uniformly; integer ranges (`kernel_size`, `jpeg`) include both ends.

Two chains exist (key `chain`, fixed by the preset):

- `"classic"`: the first-order blind-face-restoration chain of GFPGAN (Wang et al., CVPR 2021) and its successors:
  blur -> [haze] -> downsample -> Gaussian noise -> JPEG -> resize back -> [colour shift] -> [gray].
- `"second_order"`: the Real-ESRGAN chain (Wang, Xie, Dong, Shan, "Real-ESRGAN: Training Real-World Blind
  Super-Resolution with Pure Synthetic Data", ICCVW 2021): two rounds of blur / resize / noise / JPEG, a final sinc
  filter, then (our addition) a resize back to the input size so LQ and HQ share one size.

Sources of the published ranges (values only; collected in our research notes):

- `gfpgan`: GFPGAN `options/train_gfpgan_v1.yml`: kernel 41, iso/aniso 0.5/0.5, sigma [0.1, 10], downsample
  [0.8, 8], noise [0, 20], JPEG [60, 100], colour jitter p=0.3 shift 20, gray p=0.01. GFPGAN's extra torch colour
  jitter (brightness/contrast/saturation/hue, p=0.3) is not implemented (our choice).
- `daefr`: DAEFR `configs/Association_stage.yaml` (FFHQDegradationDataset): `blur_kernel_size [19, 20]` read as
  2*randint(19, 20)+1, i.e. kernel 39 or 41; sigma [0.1, 10]; downsample [0.8, 8]; noise [0, 20]; JPEG [60, 100];
  no colour jitter, no gray. The CelebA-Test synthetic set follows this pipeline.
- `osdface`: OSDFace's CelebA-Test "follows the DAEFR degradation pipeline": same values as `daefr`. HonestFace's
  own ranges are not published; `daefr` is the library default.
- `codeformer`: CodeFormer `options/CodeFormer_stage2.yml` ("large degradation"): kernel 41, sigma [1, 15],
  downsample [4, 30], noise [0, 20], JPEG [30, 80].
- `difface`: DifFace `configs/training/swinir_ffhq512.yaml`: kernel 41, sigma [0.1, 15], downsample [0.8, 32],
  noise [0, 20], JPEG [30, 100], gray p=0.01.
- `refldm`: ReF-LDM `configs/refldm.yaml`: kernel 41, sigma [0, 16] (sigma 0 gives an identity kernel), downsample
  [1, 32], noise [0, 20], JPEG [30, 100].
- `vspbfr`: VSPBFR stage-2 dataset (its `ImageFolder_restore` code): kernel 39 or 41, iso/aniso 0.5/0.5, sigma
  [0.1, 10], haze p=0.008 (I <- a*I + (1 - a), a in [0.75, 0.95], after the blur), downsample [0.8, 8], noise
  [0, 20], JPEG [60, 100], gray p=0.008 (applied to LQ and GT), no colour jitter.
- `tiny` (ours): `daefr` rescaled for 64 px faces (kernel 5-7, sigma [0.1, 1.5], downsample [1, 3]) with noise
  [10, 30] (a task a tiny model learns in minutes; used by configs/tiny and the quickstart).
- `realesrgan`: Real-ESRGAN `options/train_realesrnet_x4plus.yml`: kernels 7..21 of six types with probabilities
  [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc p=0.1, sigma [0.2, 3] / [0.2, 1.5], betag [0.5, 4], betap [1, 2],
  resize up/down/keep [0.2, 0.7, 0.1] in [0.15, 1.5] / [0.3, 0.4, 0.3] in [0.3, 1.2], Gaussian-noise p=0.5 with
  sigma [1, 30] / [1, 25], else Poisson with scale [0.05, 3] / [0.05, 2.5], gray noise p=0.4, JPEG [30, 95],
  second blur p=0.8, final sinc p=0.8, scale 4. Not implemented (our choice): the unsharp-masked GT as the
  degradation input, and a float JPEG quality (we round to an integer quality, as a real encoder does).

Our choices: JPEG qualities are integers drawn uniformly from the inclusive range; a parameter is drawn for every
image even when its stage is switched off (a fixed column of uniforms per parameter), so changing one probability
never changes the other draws of a seed. All draws of image i come from `torch.Generator` seeded with seeds[i].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
N_UNIFORMS = 64  # uniforms drawn per image; every parameter owns a fixed column

_KERNEL_DEFAULTS: dict[str, Any] = {
    "kernel_probs": (0.5, 0.5, 0.0, 0.0, 0.0, 0.0),
    "betag": (0.5, 4.0),
    "betap": (1.0, 2.0),
}

_CLASSIC: dict[str, Any] = {
    "chain": "classic",
    "kernel_size": (41, 41),
    **_KERNEL_DEFAULTS,
    "blur_sigma": (0.1, 10.0),
    "haze_prob": 0.0,
    "haze_alpha": (0.75, 0.95),
    "downsample": (0.8, 8.0),
    "noise": (0.0, 20.0),  # Gaussian sigma in /255 units
    "jpeg": (60, 100),
    "color_jitter_prob": 0.0,
    "color_jitter_shift": 20.0,  # /255 units, per channel shift in [-shift, shift]
    "gray_prob": 0.0,
    "resize_mode": "bilinear",  # down and back up (cv2.INTER_LINEAR in the reference code)
}

_REALESRGAN_KERNEL_PROBS = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
_SECOND_ORDER: dict[str, Any] = {
    "chain": "second_order",
    "scale": 4.0,
    "kernel_size": (7, 21), "kernel_probs": _REALESRGAN_KERNEL_PROBS, "blur_sigma": (0.2, 3.0),
    "betag": (0.5, 4.0), "betap": (1.0, 2.0), "sinc_prob": 0.1,
    "resize_probs": (0.2, 0.7, 0.1), "resize_range": (0.15, 1.5),
    "gaussian_noise_prob": 0.5, "noise": (1.0, 30.0), "poisson_scale": (0.05, 3.0), "gray_noise_prob": 0.4,
    "jpeg": (30, 95),
    "second_blur_prob": 0.8,
    "kernel_size2": (7, 21), "kernel_probs2": _REALESRGAN_KERNEL_PROBS, "blur_sigma2": (0.2, 1.5),
    "betag2": (0.5, 4.0), "betap2": (1.0, 2.0), "sinc_prob2": 0.1,
    "resize_probs2": (0.3, 0.4, 0.3), "resize_range2": (0.3, 1.2),
    "gaussian_noise_prob2": 0.5, "noise2": (1.0, 25.0), "poisson_scale2": (0.05, 2.5), "gray_noise_prob2": 0.4,
    "jpeg2": (30, 95),
    "final_sinc_prob": 0.8, "final_kernel_size": (7, 21),
    "resize_back_mode": "bicubic",  # our addition: final LQ -> input size
}

_DAEFR = {**_CLASSIC, "kernel_size": (39, 41)}
PRESETS: dict[str, dict[str, Any]] = {
    "gfpgan": {**_CLASSIC, "color_jitter_prob": 0.3, "gray_prob": 0.01},
    "daefr": _DAEFR,
    "osdface": dict(_DAEFR),
    "codeformer": {**_CLASSIC, "blur_sigma": (1.0, 15.0), "downsample": (4.0, 30.0), "jpeg": (30, 80)},
    "difface": {**_CLASSIC, "blur_sigma": (0.1, 15.0), "downsample": (0.8, 32.0), "jpeg": (30, 100),
                "gray_prob": 0.01},
    "refldm": {**_CLASSIC, "blur_sigma": (0.0, 16.0), "downsample": (1.0, 32.0), "jpeg": (30, 100)},
    "vspbfr": {**_DAEFR, "haze_prob": 0.008, "gray_prob": 0.008},
    "realesrgan": _SECOND_ORDER,
    # ours, for 64 px faces (tiny configs, quickstart): daefr's blur kernel and sigma scaled by 64/512, downsampling
    # 1-3x (daefr's 8x of a 64 px face leaves 8 px), stronger noise (10-30 / 255) so that the LQ carries a
    # restoration task a tiny model learns in minutes on a CPU; JPEG as daefr
    "tiny": {**_DAEFR, "kernel_size": (5, 7), "blur_sigma": (0.1, 1.5), "downsample": (1.0, 3.0), "noise": (10.0, 30.0)},
}


# --------------------------------------------------------------------------------------------- validation
def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _numbers(key: str, value: Any, n: int | None, what: str) -> tuple[float, ...]:
    items = tuple(value) if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)) else ()
    if not items or (n is not None and len(items) != n) or not all(_number(v) for v in items):
        raise ValueError(f"degradation param '{key}' must be {what}, got {value!r}")
    return tuple(float(v) for v in items)


def _pair(key: str, value: Any) -> tuple[float, float]:
    items = _numbers(key, value, 2, "a (low, high) pair of numbers")
    if items[0] > items[1]:
        raise ValueError(f"degradation param '{key}' has low > high: {value!r}")
    return items


def _check(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key == "chain":
            out[key] = value
        elif key.endswith("_mode"):
            if value not in RESIZE_MODES:
                raise ValueError(f"degradation param '{key}' must be one of {RESIZE_MODES}, got {value!r}")
            out[key] = value
        elif key.startswith(("kernel_probs", "resize_probs")):
            n = len(KERNEL_TYPES) if key.startswith("kernel") else 3
            what = f"{n} non-negative weights with a positive sum"
            probs = _numbers(key, value, n, what)
            if min(probs) < 0 or sum(probs) <= 0:
                raise ValueError(f"degradation param '{key}' must be {what}, got {value!r}")
            out[key] = probs
        elif key.endswith("_prob") or key.startswith(("gaussian_noise_prob", "gray_noise_prob", "sinc_prob")):
            if not _number(value) or not 0 <= value <= 1:
                raise ValueError(f"degradation param '{key}' must be a probability in [0, 1], got {value!r}")
            out[key] = float(value)
        elif key in ("scale", "color_jitter_shift"):
            if not _number(value) or value <= 0:
                raise ValueError(f"degradation param '{key}' must be a positive number, got {value!r}")
            out[key] = float(value)
        else:
            lo, hi = _pair(key, value)
            if key.startswith(("kernel_size", "final_kernel_size")):
                if int(lo) != lo or int(hi) != hi or lo < 1 or int(lo) + (int(lo) + 1) % 2 > hi:
                    raise ValueError(f"degradation param '{key}' must hold at least one odd size >= 1, got {value!r}")
                lo, hi = int(lo), int(hi)
            elif key.startswith("jpeg"):
                if int(lo) != lo or int(hi) != hi or lo < 1 or hi > 100:
                    raise ValueError(f"degradation param '{key}' must be integer qualities in [1, 100], got {value!r}")
                lo, hi = int(lo), int(hi)
            elif key.startswith(("downsample", "resize_range")) and lo <= 0:
                raise ValueError(f"degradation param '{key}' must be positive, got {value!r}")
            elif key == "haze_alpha" and not 0 <= lo <= hi <= 1:
                raise ValueError(f"degradation param '{key}' must lie in [0, 1], got {value!r}")
            elif lo < 0:
                raise ValueError(f"degradation param '{key}' must be non-negative, got {value!r}")
            out[key] = (lo, hi)
    return out


def preset_params(name: str, **overrides: Any) -> dict[str, Any]:
    """The validated ranges of preset `name` with `overrides` applied (keys must exist in the preset)."""
    if name not in PRESETS:
        raise ValueError(f"unknown degradation preset '{name}'; choose one of {sorted(PRESETS)}")
    params = dict(PRESETS[name])
    for key, value in overrides.items():
        if key not in params:
            raise ValueError(f"unknown degradation param '{key}' for preset '{name}'; allowed: {sorted(params)}")
        if key == "chain" and value != params["chain"]:
            raise ValueError(f"degradation param 'chain' is fixed by the preset ('{params['chain']}'); "
                             "pick the 'realesrgan' preset for the second-order chain")
        params[key] = value
    return _check(params)


def sample_seed(base_seed: int, index: int, epoch: int = 0) -> int:
    """Mix (base_seed, index, epoch) into one 63-bit seed (splitmix64 finaliser; deterministic, order-sensitive)."""
    mask = (1 << 64) - 1

    def mix(z: int) -> int:
        z = (z + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    h = mix(int(base_seed) & mask)
    for v in (int(index), int(epoch)):
        h = mix(h ^ mix(v & mask))
    return h >> 1


# --------------------------------------------------------------------------------------------- sampling
def seeds_to_list(seeds: Sequence[int] | torch.Tensor) -> list[int]:
    values = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    for s in values:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 1 << 64:
            raise ValueError(f"degradation seeds must be integers in [0, 2**64), got {s!r}")
    return values


class _Columns:
    """Hands out the columns of a (B, N_UNIFORMS) matrix of uniforms, one per drawn parameter."""

    def __init__(self, u: torch.Tensor):
        self.u, self.i = u, 0

    def next(self) -> torch.Tensor:
        col = self.u[:, self.i]
        self.i += 1
        return col

    def uniform(self, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * self.next()

    def flag(self, p: float) -> torch.Tensor:
        return self.next() < p

    def choice(self, weights: Sequence[float]) -> torch.Tensor:
        cdf = torch.tensor(weights, dtype=torch.float64).cumsum(0)
        return torch.searchsorted(cdf / cdf[-1], self.next().contiguous(), right=True).clamp(max=len(weights) - 1)

    def integer(self, lo: int, hi: int, step: int = 1) -> torch.Tensor:
        n = (hi - lo) // step + 1
        return lo + step * (self.next() * n).long().clamp(max=n - 1)


def _odd(cols: _Columns, lo: int, hi: int) -> torch.Tensor:
    return cols.integer(lo + (lo + 1) % 2, hi - (hi + 1) % 2, 2)


def _kernel(cols: _Columns, p: dict[str, Any], suffix: str, out: dict[str, torch.Tensor], sinc: bool) -> None:
    size = _odd(cols, *p["kernel_size" + suffix])
    ktype = cols.choice(p["kernel_probs" + suffix])
    sx, sy = cols.uniform(*p["blur_sigma" + suffix]), cols.uniform(*p["blur_sigma" + suffix])
    angle = cols.uniform(-math.pi, math.pi)
    below, u = cols.flag(0.5), cols.next()
    beta = torch.ones_like(sx)
    for types, (blo, bhi) in (((2, 3), p["betag" + suffix]), ((4, 5), p["betap" + suffix])):
        mid = min(max(1.0, blo), bhi)  # basicsr draws beta below or above 1 with probability 1/2 each
        draw = torch.where(below, blo + (mid - blo) * u, mid + (bhi - mid) * u)
        beta = torch.where((ktype == types[0]) | (ktype == types[1]), draw, beta)
    iso = ktype % 2 == 0
    out["kernel_size" + suffix], out["kernel_type" + suffix] = size, ktype
    out["sigma_x" + suffix], out["sigma_y" + suffix] = sx, torch.where(iso, sx, sy)
    out["angle" + suffix], out["beta" + suffix] = torch.where(iso, torch.zeros_like(angle), angle), beta
    if sinc:  # Real-ESRGAN: a circular low-pass (sinc) kernel instead; cutoff range depends on the kernel size
        use, u = cols.flag(p["sinc_prob" + suffix]), cols.next()
        lo_c = torch.where(size < 13, torch.full_like(u, math.pi / 3), torch.full_like(u, math.pi / 5))
        out["sinc" + suffix], out["omega" + suffix] = use, lo_c + (math.pi - lo_c) * u


def _resize_noise_jpeg(cols: _Columns, p: dict[str, Any], suffix: str, out: dict[str, torch.Tensor]) -> None:
    updown = cols.choice(p["resize_probs" + suffix])  # 0 up, 1 down, 2 keep
    lo, hi = p["resize_range" + suffix]
    u = cols.next()
    scale = torch.where(updown == 0, 1 + (hi - 1) * u, lo + (1 - lo) * u)
    out["resize_scale" + suffix] = torch.where(updown == 2, torch.ones_like(u), scale)
    out["resize_mode" + suffix] = cols.integer(0, len(RESIZE_MODES) - 1)
    out["gaussian_noise" + suffix] = cols.flag(p["gaussian_noise_prob" + suffix])
    out["noise_sigma" + suffix] = cols.uniform(*p["noise" + suffix])
    out["poisson_scale" + suffix] = cols.uniform(*p["poisson_scale" + suffix])
    out["gray_noise" + suffix] = cols.flag(p["gray_noise_prob" + suffix])
    out["jpeg_quality" + suffix] = cols.integer(*p["jpeg" + suffix])


def sample_params(params: Mapping[str, Any], seeds: Sequence[int] | torch.Tensor,
                  device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Per-image degradation parameters, each a (B,) tensor, drawn from one CPU generator per seed.

    Flags are bool, sizes / qualities / codes int64, the rest float64. `noise_seed` seeds the image's noise
    generator on the image's device. The draws are identical on every device.
    """
    seed_list = seeds_to_list(seeds)
    rows = [torch.rand(N_UNIFORMS, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
            for s in seed_list]
    cols = _Columns(torch.stack(rows) if rows else torch.zeros(0, N_UNIFORMS, dtype=torch.float64))
    out: dict[str, torch.Tensor] = {
        "noise_seed": torch.tensor([sample_seed(s, 0x6E6F697365) for s in seed_list], dtype=torch.int64)}
    if params["chain"] == "classic":
        _kernel(cols, params, "", out, sinc=False)
        out["haze"], out["haze_alpha"] = cols.flag(params["haze_prob"]), cols.uniform(*params["haze_alpha"])
        out["scale"] = cols.uniform(*params["downsample"])
        out["noise_sigma"] = cols.uniform(*params["noise"])
        out["jpeg_quality"] = cols.integer(*params["jpeg"])
        out["color_jitter"] = cols.flag(params["color_jitter_prob"])
        shift = params["color_jitter_shift"]
        for c in "rgb":
            out[f"jitter_{c}"] = cols.uniform(-shift, shift)
        out["gray"] = cols.flag(params["gray_prob"])
    else:
        _kernel(cols, params, "", out, sinc=True)
        _resize_noise_jpeg(cols, params, "", out)
        out["second_blur"] = cols.flag(params["second_blur_prob"])
        _kernel(cols, params, "2", out, sinc=True)
        _resize_noise_jpeg(cols, params, "2", out)
        out["final_sinc"] = cols.flag(params["final_sinc_prob"])
        out["final_kernel_size"] = _odd(cols, *params["final_kernel_size"])
        out["final_omega"] = cols.uniform(math.pi / 3, math.pi)
        out["final_resize_mode"] = cols.integer(0, len(RESIZE_MODES) - 1)
        out["jpeg_first"] = cols.flag(0.5)
    return {k: v.to(device) for k, v in out.items()}
