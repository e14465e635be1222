"""Synthetic degradation of HQ faces into LQ training inputs: batched, seeded per image, CPU or GPU.

Implements the degradation model of blind face restoration training (GFPGAN, Wang et al., CVPR 2021, and the
papers listed in `degradation_presets`):

    classic:       y = gray?(jitter?(up(JPEG_q(Q8(down_s(haze?(x * k)) + n_sigma)))))
    second order:  Real-ESRGAN (Wang et al., ICCVW 2021): two rounds of blur / resize / noise / JPEG, a final sinc
                   filter, then resize back to the input size (our addition).

The chain runs on the tensor's device and dtype, a whole batch at once where sizes allow:

- blur: one kernel per image (Gaussian, anisotropic, generalized, plateau or sinc; built for the batch in one go),
  applied by FFT with a reflect-101 border (what cv2.filter2D does); images of one size share one batched FFT;
- resize: `F.interpolate` (bilinear, no antialias: cv2.INTER_LINEAR's sampling), grouped by target size;
- noise: from a per-image `torch.Generator` on the device; values are quantised to 8 bit after the noise;
- JPEG: a libjpeg-faithful torch codec (`jpeg_compress`): the encoder's fixed-point RGB -> YCbCr, 4:2:0 chroma
  by 2x2 averaging with libjpeg's rounding bias, 8x8 DCT, the IJG Annex K tables scaled by quality exactly as
  `jpeg_quality_scaling` does (baseline, clamped to 255), round-half-away quantisation, IDCT, libjpeg's "fancy"
  (triangular) chroma upsampling and fixed-point YCbCr -> RGB. Only the integer DCT's rounding differs from
  libjpeg, so decoded pixels match Pillow / OpenCV to a fraction of a grey level (tests/test_degradation.py).

Every random value of image i comes from generators seeded with seeds[i] (never the global RNG), so image i's LQ
depends only on its pixels and its seed, whatever else is in the batch. Parameters are drawn on the CPU and are
the same on every device; noise pixels come from a generator on the image's device.

Gray: when `params["gray"]` is set the LQ is made gray; the reference pipelines gray the GT too (GFPGAN `gt_gray`,
VSPBFR), which the dataset does with `rgb_to_gray(hq)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from honestface.data.degradation_presets import (
    PRESETS,
    RESIZE_MODES,
    preset_params,
    sample_params,
    sample_seed,
    seeds_to_list,
)

__all__ = [
    "PRESETS",
    "Degradation",
    "DegradationOutput",
    "blur",
    "jpeg_compress",
    "make_kernels",
    "preset_params",
    "rgb_to_gray",
    "sample_params",
    "sample_seed",
    "sinc_kernels",
]

Images = list[torch.Tensor]  # each (1, C, h, w); sizes may differ


# --------------------------------------------------------------------------------------------- small helpers
def _quantize(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels (k / 255)."""
    return (x.clamp_(0, 1) if inplace else x.clamp(0, 1)).mul_(255).round_().div_(255)


def _rows(flags: torch.Tensor) -> list[int]:
    return [i for i, f in enumerate(flags.tolist()) if f]


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma (cv2.COLOR_RGB2GRAY weights), replicated to 3 channels. (B, 3, H, W) -> (B, 3, H, W)."""
    y = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return y.expand(-1, 3, -1, -1).contiguous()


def _group(items: Sequence[Any], key: Callable[[int], Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i in range(len(items)):
        groups.setdefault(key(i), []).append(i)
    return groups


def _resize(images: Images, sizes: Sequence[tuple[int, int]], modes: Sequence[str]) -> Images:
    """Resize image i to sizes[i] with modes[i]; images sharing (input shape, size, mode) go in one call."""
    out: Images = list(images)
    for (shape, size, mode), idx in _group(images, lambda i: (images[i].shape, sizes[i], modes[i])).items():
        if shape[-2:] == size:
            continue
        extra = {} if mode == "area" else {"align_corners": False}
        batch = F.interpolate(torch.cat([images[i] for i in idx]), size=size, mode=mode, **extra)
        for j, i in enumerate(idx):
            out[i] = batch[j : j + 1]
    return out


# --------------------------------------------------------------------------------------------- blur
def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    r = size // 2
    ax = torch.arange(-r, r + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")  # (K, K), x horizontal
    return xx, yy


def _finish(k: torch.Tensor, sizes: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    """Cut each kernel to its own odd size (zero outside), normalise to sum 1."""
    half = sizes.detach().to("cpu", torch.float64).view(-1, 1, 1) // 2
    k = k * ((xx.abs() <= half) & (yy.abs() <= half))
    return k / k.sum(dim=(1, 2), keepdim=True)


def sinc_kernels(omega: torch.Tensor, sizes: torch.Tensor, size: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Circular low-pass kernels omega J1(omega r) / (2 pi r) (omega^2 / (4 pi) at r = 0), cut to sizes[b] and
    padded to (B, size, size). omega, sizes: (B,). Built in float64 on the CPU (tiny), returned on `device`."""
    xx, yy = _grid(size)
    w = omega.detach().to("cpu", torch.float64).view(-1, 1, 1)
    rad = torch.sqrt(xx**2 + yy**2)
    safe = rad.clamp(min=1e-12)
    k = torch.where(rad == 0, w**2 / (4 * math.pi), w * torch.special.bessel_j1(w * safe) / (2 * math.pi * safe))
    return _finish(k, sizes, xx, yy).to(device=device, dtype=dtype)


def make_kernels(params: dict[str, torch.Tensor], size: int, suffix: str = "", dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """The B blur kernels described by `params` (keys kernel_type, kernel_size, sigma_x/y, angle, beta and, when
    present, sinc/omega; each with `suffix`), zero-padded to (B, size, size), each summing to 1. Built in float64
    on the CPU (tiny), returned on `device` in `dtype`."""
    xx, yy = _grid(size)

    def get(name: str) -> torch.Tensor:
        return params[name + suffix].detach().to("cpu", torch.float64)[:, None, None]

    angle, beta = get("angle"), get("beta")
    sx, sy = get("sigma_x").clamp(min=1e-3), get("sigma_y").clamp(min=1e-3)  # sigma 0 -> identity kernel
    u = torch.cos(angle) * xx + torch.sin(angle) * yy  # rotate into the kernel's principal axes
    v = -torch.sin(angle) * xx + torch.cos(angle) * yy
    q = ((u / sx) ** 2 + (v / sy) ** 2) ** beta
    k = torch.where(get("kernel_type") >= 4, 1 / (1 + q), torch.exp(-0.5 * q))  # plateau | (generalized) Gaussian
    k = _finish(k, params["kernel_size" + suffix], xx, yy)
    if "sinc" + suffix in params:
        sinc = sinc_kernels(params["omega" + suffix], params["kernel_size" + suffix], size, torch.float64)
        k = torch.where(get("sinc") > 0, sinc, k)
    return k.to(device=device, dtype=dtype)


def _identity_kernels(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    k = like.new_zeros(n, size, size)
    k[:, size // 2, size // 2] = 1
    return k


def _fft_len(n: int) -> int:
    """Smallest m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Filter image b with kernels[b] (point-symmetric, odd size) by FFT, reflect-101 border (cv2.filter2D).

    (B, C, H, W), (B, K, K) -> (B, C, H, W).
    """
    B, _, H, W = x.shape
    K = kernels.shape[-1]
    r = K // 2
    mode = "reflect" if r < min(H, W) else "replicate"  # reflect needs the border narrower than the image
    xp = F.pad(x, (r, r, r, r), mode=mode) if r else x
    Hf, Wf = _fft_len(H + 2 * r), _fft_len(W + 2 * r)
    kp = x.new_zeros(B, Hf, Wf)
    kp[:, :K, :K] = kernels.to(x.dtype)
    kp = torch.roll(kp, shifts=(-r, -r), dims=(1, 2))  # kernel centre at (0, 0): circular conv = linear inside
    spec = torch.fft.rfft2(xp, s=(Hf, Wf)) * torch.fft.rfft2(kp)[:, None]
    return torch.fft.irfft2(spec, s=(Hf, Wf))[..., r : r + H, r : r + W]


def _blur_list(images: Images, kernels: torch.Tensor) -> Images:
    out: Images = list(images)
    for idx in _group(images, lambda i: images[i].shape).values():
        res = blur(torch.cat([images[i] for i in idx]), kernels[idx])
        for j, i in enumerate(idx):
            out[i] = res[j : j + 1]
    return out


# --------------------------------------------------------------------------------------------- JPEG
_LUMA_Q = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
           14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)  # ITU T.81 Annex K.1, row-major
_CHROMA_Q = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
             47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32  # Annex K.2


def _quant_tables(quality: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """libjpeg `jpeg_set_quality(q, force_baseline=TRUE)`: (B,) int qualities -> two (B, 64) tables."""
    q = quality.long().clamp(1, 100)[:, None]
    scale = torch.where(q < 50, torch.div(5000, q, rounding_mode="floor"), 200 - 2 * q)
    tables = []
    for base in (_LUMA_Q, _CHROMA_Q):
        t = torch.tensor(base, dtype=torch.long, device=q.device)[None]
        tables.append(torch.div(t * scale + 50, 100, rounding_mode="floor").clamp(1, 255).to(dtype))
    return tables[0], tables[1]


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """kron(D, D) for the orthonormal 8-point DCT-II D (JPEG's normalisation): (64, 64)."""
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return torch.kron(d, d).to(dtype=dtype, device=device)


def _dct_quantize(x: torch.Tensor, table: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """8-bit samples -> level shift, 8x8 DCT, quantise, dequantise, IDCT -> 8-bit samples.
    (B, C, H, W) with H, W multiples of 8, (B, 64) table -> (B, C, H, W)."""
    B, C, H, W = x.shape
    cols = F.unfold(x - 128, 8, stride=8).view(B, C, 64, -1)  # (B, C, 64, blocks), block pixels row-major
    coef = m @ cols
    t = table.view(B, 1, 64, 1)
    half = torch.copysign(torch.full_like(coef[:1, :1, :1, :1], 0.5), coef)
    coef = coef.div_(t).add_(half).trunc_().mul_(t)  # libjpeg quantises rounding half away from zero
    rec = (m.T @ coef).add_(128).round_().clamp_(0, 255)
    return F.fold(rec.view(B, C * 64, -1), (H, W), 8, stride=8)


def _fancy_upsample(c: torch.Tensor) -> torch.Tensor:
    """libjpeg h2v2 "fancy" chroma upsampling: triangular 3/4-1/4 weights, edge replicated, rounding bias 8 on
    even and 7 on odd output columns (of 16). Exact for 8-bit integer inputs. (B, C, h, w) -> (B, C, 2h, 2w)."""
    up = F.interpolate(c, scale_factor=2, mode="bilinear", align_corners=False)
    bias = torch.tensor([8.0, 7.0], dtype=c.dtype, device=c.device).repeat(c.shape[-1]) / 16
    return torch.floor(up + bias)


_RGB_TO_YCC = ((19595, 38470, 7471), (-11059, -21709, 32768), (32768, -27439, -5329))  # FIX(coef) = coef * 2**16
_YCC_TO_RGB = ((0, 91881), (-22554, -46802), (116130, 0))  # (Cb - 128, Cr - 128) -> R, G, B offsets


def _ycc(rgb: torch.Tensor) -> torch.Tensor:
    """libjpeg's fixed-point RGB -> YCbCr on 8-bit integers (every sum is an integer < 2**24, exact in float32).
    (B, 3, H, W) -> (B, 3, H, W)."""
    B, _, H, W = rgb.shape
    weight = torch.tensor(_RGB_TO_YCC, dtype=rgb.dtype, device=rgb.device)
    bias = torch.tensor([32768, 8421375, 8421375], dtype=rgb.dtype, device=rgb.device)  # rounding, 128 << 16
    return (weight @ rgb.reshape(B, 3, H * W)).add_(bias[:, None]).mul_(2.0**-16).floor_().view(B, 3, H, W)


def _rgb(y: torch.Tensor, cbcr: torch.Tensor) -> torch.Tensor:
    """libjpeg's fixed-point YCbCr -> RGB, range-limited. (B, 1, H, W), (B, 2, H, W) -> (B, 3, H, W) in 0..255."""
    B, _, H, W = y.shape
    weight = torch.tensor(_YCC_TO_RGB, dtype=y.dtype, device=y.device)
    bias = 32768 - 128 * weight.sum(dim=1)
    out = (weight @ cbcr.reshape(B, 2, H * W)).add_(bias[:, None]).mul_(2.0**-16).floor_().view(B, 3, H, W)
    return out.add_(y).clamp_(0, 255)


def _jpeg_same_size(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG round trip of a batch of one size. (n, 3, h, w) in [0, 1], (n,) -> (n, 3, h, w) 8-bit values."""
    h, w = x.shape[-2:]
    work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    ph, pw = -h % 16, -w % 16  # libjpeg fills partial MCUs by repeating the last row / column
    rgb = (x.to(work).clamp(0, 1) * 255).round_()
    rgb = F.pad(rgb, (0, pw, 0, ph), mode="replicate") if ph or pw else rgb
    ycc = _ycc(rgb)
    c_sum = F.avg_pool2d(ycc[:, 1:], 2).mul_(4)  # 4:2:0 by 2x2 sums, rounding bias 1, 2, 1, 2, ... along a row
    bias = torch.tensor([1.0, 2.0], dtype=work, device=x.device).repeat(c_sum.shape[-1] // 2)
    chroma = c_sum.add_(bias).div_(4).floor_()
    q_luma, q_chroma = _quant_tables(quality, work)
    m = _dct_matrix(work, x.device)
    y_rec, c_rec = _dct_quantize(ycc[:, :1], q_luma, m), _dct_quantize(chroma, q_chroma, m)
    ch, cw = -(-h // 2), -(-w // 2)  # the decoder upsamples the chroma plane of its own size, not the MCU's
    c = _fancy_upsample(c_rec[:, :, :ch, :cw])[..., :h, :w]
    return _rgb(y_rec[:, :, :h, :w], c).div_(255).to(x.dtype)


def jpeg_compress(images: torch.Tensor | Images, quality: torch.Tensor | Sequence[int] | int
                  ) -> torch.Tensor | Images:
    """Encode + decode as baseline 4:2:0 JPEG at integer `quality` (per image), like Pillow / OpenCV defaults.

    `images`: (B, 3, H, W) in [0, 1], or a list of (1, 3, h_i, w_i) of varied sizes (images of one size are
    processed as one batch); quantised to 8 bit first. Returns the same structure, 8-bit values in [0, 1].
    """
    if isinstance(images, torch.Tensor):
        q = torch.as_tensor(quality, device=images.device).reshape(-1)
        return _jpeg_same_size(images, q.expand(images.shape[0]) if q.numel() == 1 else q)
    if not images:
        return []
    q = torch.as_tensor(quality, device=images[0].device).reshape(-1)
    q = q.expand(len(images)) if q.numel() == 1 else q
    out: Images = list(images)
    for idx in _group(images, lambda i: images[i].shape).values():
        res = _jpeg_same_size(torch.cat([images[i] for i in idx]), q[idx])
        for j, i in enumerate(idx):
            out[i] = res[j : j + 1]
    return out


# --------------------------------------------------------------------------------------------- noise
def _add_noise(img: torch.Tensor, gen: torch.Generator, gaussian: bool, sigma: float, poisson_scale: float,
               gray: bool) -> torch.Tensor:
    """Gaussian (sigma in /255) or Poisson (Real-ESRGAN: shot noise at 2**ceil(log2(#levels)) levels) noise;
    `gray` draws one noise plane shared by the channels. (1, 3, h, w) -> (1, 3, h, w), clamped to [0, 1]."""
    _, _, h, w = img.shape
    if gaussian:
        noise = torch.randn((1, 1 if gray else 3, h, w), generator=gen, device=img.device, dtype=img.dtype)
        noise = noise * (sigma / 255)
    else:
        src = _quantize(rgb_to_gray(img)[:, :1] if gray else img)
        levels = 2 ** math.ceil(math.log2(max(len(torch.unique(src)), 1)))
        noise = (torch.poisson(src * levels, generator=gen) / levels - src) * poisson_scale
    return (img + noise).clamp(0, 1)


# --------------------------------------------------------------------------------------------- pipeline
@dataclass
class DegradationOutput:
    """lq: (B, 3, H, W) in [0, 1], 8-bit values; params: the per-image draws, each (B,) on lq's device."""

    lq: torch.Tensor
    params: dict[str, torch.Tensor]


class Degradation:
    """HQ -> LQ synthetic degradation with a named preset (see `degradation_presets.PRESETS`) and overrides.

    >>> deg = Degradation("daefr", noise=(0, 10))
    >>> out = deg(hq, seeds=[sample_seed(seed, i, epoch) for i in indices])  # hq (B, 3, H, W) in [0, 1]
    """

    def __init__(self, preset: str = "daefr", **overrides: Any):
        self.preset = preset
        self.params = preset_params(preset, **overrides)

    def __repr__(self) -> str:
        return f"Degradation(preset={self.preset!r}, chain={self.params['chain']!r})"

    def sample_params(self, seeds: Sequence[int] | torch.Tensor,
                      device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The per-image parameters of `seeds` without touching any image: {name: (B,) tensor}."""
        return sample_params(self.params, seeds, device)

    def __call__(self, hq: torch.Tensor, seeds: Sequence[int] | torch.Tensor) -> DegradationOutput:
        if not (isinstance(hq, torch.Tensor) and hq.ndim == 4 and hq.shape[1] == 3 and hq.is_floating_point()):
            got = tuple(hq.shape) if isinstance(hq, torch.Tensor) else type(hq).__name__
            raise ValueError(f"Degradation expects a float (B, 3, H, W) tensor in [0, 1], got {got}")
        seed_list = seeds_to_list(seeds)
        if len(seed_list) != hq.shape[0]:
            raise ValueError(f"Degradation needs one seed per image: {len(seed_list)} seeds for {hq.shape[0]} images")
        params = self.sample_params(seed_list, hq.device)
        if hq.shape[0] == 0:
            return DegradationOutput(lq=hq.detach().clone(), params=params)
        return DegradationOutput(lq=self.apply(hq, params), params=params)

    @torch.no_grad()
    def apply(self, hq: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Degrade `hq` (B, 3, H, W) with given per-image `params` (from `sample_params`) -> (B, 3, H, W).
        Half-precision input is processed in float32 (FFT and exact JPEG arithmetic need it) and cast back."""
        gens = [torch.Generator(device=hq.device).manual_seed(int(s)) for s in params["noise_seed"].tolist()]
        x = hq.float() if hq.dtype in (torch.float16, torch.bfloat16) else hq
        chain = self._classic if self.params["chain"] == "classic" else self._second_order
        return chain(x, params, gens).to(hq.dtype)

    def _max_kernel(self, key: str) -> int:
        hi = self.params[key][1]
        return hi - (hi + 1) % 2

    def _classic(self, hq: torch.Tensor, p: dict[str, torch.Tensor], gens: list[torch.Generator]) -> torch.Tensor:
        B, _, H, W = hq.shape
        x = blur(hq, make_kernels(p, self._max_kernel("kernel_size"), dtype=hq.dtype, device=hq.device))
        mode = self.params["resize_mode"]
        sizes = [(max(1, int(H // s)), max(1, int(W // s))) for s in p["scale"].tolist()]  # cv2: int(w // scale)
        small = _resize(list(x.split(1)), sizes, [mode] * B)
        alpha = p["haze_alpha"].tolist()
        for i in _rows(p["haze"]):  # haze a*x + (1 - a) commutes with the resize (its weights sum to 1): apply it
            small[i] = small[i] * alpha[i] + (1 - alpha[i])  # on the small image, where it is cheaper
        sigmas = p["noise_sigma"].tolist()
        small = [_quantize(_add_noise(im, g, True, s, 0.0, False), inplace=True)
                 for im, g, s in zip(small, gens, sigmas)]
        small = jpeg_compress(small, p["jpeg_quality"])
        x = torch.cat(_resize(small, [(H, W)] * B, [mode] * B))
        shift = torch.stack([p["jitter_r"], p["jitter_g"], p["jitter_b"]], dim=1).to(hq.dtype) / 255  # (B, 3)
        for i in _rows(p["color_jitter"]):
            x[i] = (x[i] + shift[i].view(3, 1, 1)).clamp_(0, 1)
        for i in _rows(p["gray"]):
            x[i] = rgb_to_gray(x[i : i + 1])[0]
        return _quantize(x, inplace=True)

    def _round(self, imgs: Images, p: dict[str, torch.Tensor], sfx: str, gens: list[torch.Generator],
               base: tuple[float, float], jpeg: bool) -> Images:
        """One Real-ESRGAN round after its blur: resize (relative to `base` size), noise, [JPEG]."""
        sizes = [(max(1, int(base[0] * s)), max(1, int(base[1] * s))) for s in p["resize_scale" + sfx].tolist()]
        imgs = _resize(imgs, sizes, [RESIZE_MODES[m] for m in p["resize_mode" + sfx].tolist()])
        rows = zip(imgs, gens, p["gaussian_noise" + sfx].tolist(), p["noise_sigma" + sfx].tolist(),
                   p["poisson_scale" + sfx].tolist(), p["gray_noise" + sfx].tolist())
        imgs = [_quantize(_add_noise(*row), inplace=True) for row in rows]
        return jpeg_compress(imgs, p["jpeg_quality" + sfx]) if jpeg else imgs

    def _second_order(self, hq: torch.Tensor, p: dict[str, torch.Tensor], gens: list[torch.Generator]
                      ) -> torch.Tensor:
        B, _, H, W = hq.shape
        dt, dev = hq.dtype, hq.device
        x = blur(hq, make_kernels(p, self._max_kernel("kernel_size"), dtype=dt, device=dev))
        imgs = self._round(list(x.split(1)), p, "", gens, (H, W), jpeg=True)
        k2 = make_kernels(p, self._max_kernel("kernel_size2"), "2", dtype=dt, device=dev)
        k2 = torch.where(p["second_blur"].view(B, 1, 1), k2, _identity_kernels(B, k2.shape[-1], k2))
        imgs = _blur_list(imgs, k2)
        s = self.params["scale"]
        imgs = self._round(imgs, p, "2", gens, (H / s, W / s), jpeg=False)
        # the round-2 JPEG and [resize to H/scale + final sinc] run in a random order per image
        fk = self._max_kernel("final_kernel_size")
        sinc = sinc_kernels(p["final_omega"], p["final_kernel_size"], fk, dtype=dt, device=dev)
        sinc = torch.where(p["final_sinc"].view(B, 1, 1), sinc, _identity_kernels(B, fk, sinc))
        target = (max(1, int(H // s)), max(1, int(W // s)))
        modes = [RESIZE_MODES[m] for m in p["final_resize_mode"].tolist()]
        quality = p["jpeg_quality2"]
        first = p["jpeg_first"].tolist()
        jpeg_idx = [i for i in range(B) if first[i]]
        if jpeg_idx:
            done = jpeg_compress([_quantize(imgs[i]) for i in jpeg_idx], quality[jpeg_idx])
            for j, i in enumerate(jpeg_idx):
                imgs[i] = done[j]
        imgs = _blur_list(_resize(imgs, [target] * B, modes), sinc)
        late = [i for i in range(B) if not first[i]]
        if late:
            done = jpeg_compress([_quantize(imgs[i]) for i in late], quality[late])
            for j, i in enumerate(late):
                imgs[i] = done[j]
        x = _quantize(torch.cat(imgs))
        x = F.interpolate(x, size=(H, W), mode=self.params["resize_back_mode"],
                          **({} if self.params["resize_back_mode"] == "area" else {"align_corners": False}))
        return _quantize(x)
