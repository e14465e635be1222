"""PSNR and SSIM of face restoration, batched, with the exact conventions of the tables they are compared with.

Paper component: the PSNR / SSIM columns of the HonestFace tables (Wang et al., arXiv 2505.18469), which follow
OSDFace / DiffBIR practice (pyiqa), and the Y-channel variants of BasicSR-based face restoration papers
(VQFR, DAEFR, CodeFormer evaluation scripts).

Definitions (facts read from the sources; the code is ours). Inputs are RGB tensors (B, 3, H, W) in [0, 1]:
- `psnr` = pyiqa 0.1.16 `psnr` (chaofengc/IQA-PyTorch:pyiqa/archs/psnr_arch.py, default options): RGB, data
  range 1, 10 log10(1 / (MSE + 1e-8)) in the input's dtype; identical images give 80 dB, not inf.
- `ssim` = pyiqa 0.1.16 `ssim` (pyiqa/archs/ssim_arch.py with default_model_configs `test_y_channel=True`,
  `downsample=False`; pyiqa/utils/color_util.py): luma Y = 0.299 R + 0.587 G + 0.114 B (the Y of YIQ), scaled
  to 0-255 and rounded to integers (as MATLAB on uint8 images), then Wang et al. (TIP 2004) SSIM in float64:
  11x11 Gaussian window (sigma 1.5, `fspecial`), K1 = 0.01, K2 = 0.03, data range 255, 'valid' region (no
  padding), the contrast-structure term clamped at 0 (`relu`), mean of the map. No downsampling, no crop.
- `ssim_rgb`: the same SSIM on R, G and B (0-255, not rounded, no clamp), averaged over the channels; equals
  skimage `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)`
  and pyiqa `ssimc` on uint8-derived images.
- `psnr_y`, `ssim_y` = BasicSR `calculate_psnr` / `calculate_ssim` with `test_y_channel=True`
  (XPixelGroup/BasicSR:basicsr/metrics/psnr_ssim.py, metric_util.py `to_y_channel`, utils/color_util.py
  `bgr2ycbcr`): `crop_border` pixels dropped on every side first; Y = 16 + 65.481 R + 128.553 G + 24.966 B
  (ITU-R BT.601, MATLAB `rgb2ycbcr`, range 16-235) computed from float32 [0, 1] values and stored as float32
  (not rounded), then float64; PSNR with peak 255 (inf for identical images); SSIM with `cv2.getGaussianKernel
  (11, 1.5)` applied as a 2-D window on the valid region (no clamp).

Our choices: the Gaussian window is applied separably (it is the outer product of the 1-D one), as two banded
matrix products for images up to 640 px and as shifted sums above (same numbers to ~1e-13, much faster than a
per-image 2-D convolution); every function works on the whole batch at once.
"""

from __future__ import annotations

import functools

import torch

# ITU-R BT.601 luma weights on [0, 1] RGB giving Y in [16, 235] (MATLAB rgb2ycbcr, BasicSR)
_BT601_Y = (65.481, 128.553, 24.966)
# RGB -> YIQ matrix (rows Y, I, Q) of pyiqa's rgb2yiq; only the Y row is used
_YIQ = ((0.299, 0.587, 0.114), (0.5959, -0.2746, -0.3213), (0.2115, -0.5227, 0.3112))
_BANDED_MAX = 640  # largest side filtered by banded matrix products (above: shifted sums, less memory)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """pyiqa `psnr`: (B, C, H, W) pair on the `data_range` scale -> (B,) dB as float64, 10 log10(peak^2 / (MSE + 1e-8)).

    Computed in the inputs' float dtype, as pyiqa does (integer inputs in float64)."""
    _check_pair(x, y)
    if not (x.is_floating_point() and y.is_floating_point()):
        x, y = x.double(), y.double()
    mse = (x - y).square_().mean((1, 2, 3))
    return (10 * torch.log10(data_range**2 / (mse + 1e-8))).double()


@functools.lru_cache(maxsize=4)
def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()  # (size,) float64; its outer product is MATLAB fspecial / cv2's 2-D window


@functools.lru_cache(maxsize=8)
def _band(n: int, device: torch.device) -> torch.Tensor:
    """(n - 10, n) float64 matrix whose row i holds the 11-tap Gaussian at columns i..i+10 ('valid' filtering)."""
    g = _gaussian_1d()
    rows = torch.arange(n - 10)
    band = torch.zeros(n - 10, n, dtype=torch.float64)
    for k in range(11):
        band[rows, rows + k] = g[k]
    return band.to(device)


def gaussian_filter_valid(s: torch.Tensor) -> torch.Tensor:
    """11x11 Gaussian (sigma 1.5) filter, 'valid' region: (B, C, H, W) float64 -> (B, C, H - 10, W - 10)."""
    h, w = s.shape[-2:]
    if min(h, w) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {h}x{w}")
    if max(h, w) <= _BANDED_MAX:
        return _band(h, s.device) @ s @ _band(w, s.device).T
    g = _gaussian_1d().to(s.device)
    rows = sum(g[k] * s[..., k : h - 10 + k, :] for k in range(11))
    return sum(g[k] * rows[..., k : w - 10 + k] for k in range(11))


def gaussian_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0, clamp_cs: bool = False) -> torch.Tensor:
    """Wang et al. SSIM, (B, C, H, W) pair on the `data_range` scale -> (B,) float64, mean over channels and the
    valid region. `clamp_cs` clamps the contrast-structure term at 0 (pyiqa)."""
    _check_pair(x, y)
    c = x.shape[1]
    x, y = x.double(), y.double()
    stats = gaussian_filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1))  # (B, 5C, H - 10, W - 10)
    mx, my, xx, yy, xy = stats.split(c, dim=1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mxy = mx * my
    cs = (2 * (xy - mxy) + c2) / (xx - mx * mx + yy - my * my + c2)
    if clamp_cs:
        cs = cs.clamp_min(0)
    return ((2 * mxy + c1) / (mx * mx + my * my + c1) * cs).mean((1, 2, 3))


def yiq_luma_255(x: torch.Tensor) -> torch.Tensor:
    """pyiqa's `to_y_channel(x, 255, "yiq")`: (B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) integer-valued Y in 0-255.

    Computed like pyiqa (float32 constants, a matrix product in the input's dtype, then x255 and rounding), so
    pixels whose luma lies exactly on .5 round the same way."""
    m = torch.tensor(_YIQ).t().to(x)  # float32 constants cast to the input dtype, as pyiqa does
    yiq = torch.matmul(x.permute(0, 2, 3, 1), m).permute(0, 3, 1, 2)
    return (yiq[:, :1] * 255).round()


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """pyiqa `ssim` (default settings): (B, 3, H, W) RGB pair in [0, 1] -> (B,) float64."""
    _check_pair(x, y)
    return gaussian_ssim(yiq_luma_255(x).double(), yiq_luma_255(y).double(), 255.0, clamp_cs=True)


def ssim_rgb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM on R, G, B (0-255, not rounded, no clamp) averaged: (B, 3, H, W) pair in [0, 1] -> (B,) float64."""
    return gaussian_ssim(x.double() * 255, y.double() * 255, 255.0)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BasicSR `to_y_channel`: (B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) BT.601 Y in [16, 235], float64 holding
    BasicSR's float32 values (Y / 255 stored as float32, times 255 in float32)."""
    w = torch.tensor(_BT601_Y, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    y01 = ((x.float().double() * w).sum(1, keepdim=True) + 16.0) / 255.0
    return (y01.float() * 255.0).double()


def _crop(x: torch.Tensor, crop_border: int) -> torch.Tensor:
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border == 0:
        return x
    if min(x.shape[-2:]) <= 2 * crop_border:
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {tuple(x.shape[-2:])} image")
    return x[..., crop_border:-crop_border, crop_border:-crop_border]


def psnr_y(x: torch.Tensor, y: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """BasicSR `calculate_psnr(test_y_channel=True)`: (B, 3, H, W) pair in [0, 1] -> (B,) dB (inf if identical)."""
    _check_pair(x, y)
    yx, yy = rgb_to_y(_crop(x, crop_border)), rgb_to_y(_crop(y, crop_border))
    mse = ((yx - yy) ** 2).mean((1, 2, 3))
    return 10 * torch.log10(255.0**2 / mse)  # mse == 0 -> inf, as BasicSR


def ssim_y(x: torch.Tensor, y: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """BasicSR `calculate_ssim(test_y_channel=True)`: (B, 3, H, W) pair in [0, 1] -> (B,) float64."""
    _check_pair(x, y)
    return gaussian_ssim(rgb_to_y(_crop(x, crop_border)), rgb_to_y(_crop(y, crop_border)), 255.0)
