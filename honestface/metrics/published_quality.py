"""VQFR's published PSNR / SSIM: `psnr_vqfr`, `ssim_vqfr`, exactly as TencentARC/VQFR:metric_paper/calculate_psnr_ssim.py
computes the PSNR and SSIM columns of VQFR's tables.

The script's steps, which this module follows:
1. files are paired by sorted name; each is read with OpenCV (`IMREAD_UNCHANGED`, BGR) as float32 / 255;
2. `--correct_mean_var` is on whatever the command line says (`action='store_true', default=True`): each of the
   first three channels of the restored image is shifted to the GT channel's mean and scaled to its standard
   deviation (numpy population std), twice in a row, in float32, without clipping;
3. PSNR / SSIM on all channels (RGB; `--test_y_channel` is off by default) of the images times 255, with
   `crop_border` 0: BasicSR `calculate_psnr` (float64 MSE over every pixel and channel, 20 log10(255 / sqrt(MSE)),
   inf for identical images) and `calculate_ssim` (per channel: 11x11 Gaussian window, sigma 1.5, valid region,
   C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; mean over channels);
4. the printed number is the mean over pairs.

The correction makes these numbers differ from a plain PSNR / SSIM (it removes global colour and contrast shifts),
which is why they carry their own names. Our choice: only the per-pair arithmetic is ours (numpy, float64 filters
via separable 1-D passes, which equal the 2-D Gaussian filter on the valid region).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

SOURCE = "TencentARC/VQFR:metric_paper/calculate_psnr_ssim.py"
NAMES = ("psnr_vqfr", "ssim_vqfr")


def read_unchanged(path: str | os.PathLike) -> np.ndarray:
    """The script's read: cv2.imread(IMREAD_UNCHANGED) as float32 / 255, (H, W, C) in OpenCV's channel order."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    img = img.astype(np.float32) / 255.0
    return img[..., None] if img.ndim == 2 else img


def correct_mean_var(restored: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """VQFR's colour correction of the restored image towards the GT (channels 0-2, twice, float32)."""
    out = restored.copy()
    for c in range(3):
        target_mean, target_std = np.mean(gt[:, :, c]), np.std(gt[:, :, c])
        ch = out[:, :, c]
        for _ in range(2):
            ch = ch - np.mean(ch) + target_mean
            ch = ch / np.std(ch) * target_std
        out[:, :, c] = ch
    return out


def _gaussian_window() -> np.ndarray:
    r = np.arange(11, dtype=np.float64) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    return g / g.sum()  # (11,)


def _valid_filter(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """2-D Gaussian filter on the valid region of (H, W, C), as two 1-D passes -> (H-10, W-10, C)."""
    k = len(g)
    rows = sum(g[i] * img[i : img.shape[0] - k + 1 + i] for i in range(k))
    return sum(g[j] * rows[:, j : rows.shape[1] - k + 1 + j] for j in range(k))


def psnr_ssim_255(restored: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """BasicSR PSNR and channel-mean SSIM of two (H, W, C) images on the 0-255 scale (float64)."""
    a, b = restored.astype(np.float64), gt.astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"restored {a.shape} and gt {b.shape} must have the same shape")
    if min(a.shape[:2]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[:2]}")
    mse = float(np.mean((a - b) ** 2))
    psnr = float("inf") if mse == 0 else float(20.0 * np.log10(255.0 / np.sqrt(mse)))
    g = _gaussian_window()
    mu_a, mu_b = _valid_filter(a, g), _valid_filter(b, g)
    var_a = _valid_filter(a * a, g) - mu_a**2
    var_b = _valid_filter(b * b, g) - mu_b**2
    cov = _valid_filter(a * b, g) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return psnr, float(smap.mean(axis=(0, 1)).mean())


def vqfr_pair(restored_path: str | os.PathLike, gt_path: str | os.PathLike) -> tuple[float, float]:
    """(PSNR, SSIM) of one pair of files, the script's steps 1-3."""
    gt = read_unchanged(gt_path)
    restored = correct_mean_var(read_unchanged(restored_path), gt)
    return psnr_ssim_255(restored * 255, gt * 255)


class VQFRPsnrSsim:
    """`psnr_vqfr` and `ssim_vqfr` of paired files (see the module docstring)."""

    names = NAMES
    source = SOURCE

    def pair_values(self, restored: Sequence[Path], gt: Sequence[Path]) -> dict[str, np.ndarray]:
        """{"psnr_vqfr": (N,), "ssim_vqfr": (N,)} of the pairs (restored[i], gt[i])."""
        if len(restored) != len(gt):
            raise ValueError(f"{len(restored)} restored files for {len(gt)} ground-truth files")
        values = np.array([vqfr_pair(r, g) for r, g in zip(restored, gt)], dtype=np.float64).reshape(-1, 2)
        return {"psnr_vqfr": values[:, 0], "ssim_vqfr": values[:, 1]}

    @staticmethod
    def aggregate(values: np.ndarray, num_gt: int) -> dict[str, float]:
        """The script's printed number: the plain mean over pairs (an inf PSNR makes it inf, as in the script)."""
        return {"value": float(np.mean(values)) if len(values) else float("nan")}
