"""Colour correction of restored faces: keep the input's colours, take the restoration's details.

One-step diffusion restorers drift in colour (the VAE round trip and the UNet shift low frequencies). OSEDiff and
OSDFace (github.com/jkwang28/OSDFace) correct this at inference with a wavelet low-frequency transfer; StableSR
introduced both that and an AdaIN (per-channel mean/std) transfer. What we keep from them are the ideas:

- `wavelet_color_fix(output, input)`: split both images into a low-frequency part and the rest with an a-trous
  ("with holes") wavelet: `levels` Gaussian blurs, the i-th with a 3x3 [1, 2, 1] / 4 kernel dilated by 2^i
  (5 levels, as in those repos). The result is the output's high frequencies plus the input's low frequencies.
- `adain_color_fix(output, input)`: per image and channel, (output - mean_out) / std_out * std_in + mean_in.

Our choices: the code is ours; both functions take torch tensors (3, H, W) / (B, 3, H, W) or numpy (H, W, 3) /
(B, H, W, 3) arrays (float in [0, 1] or uint8) and return the same kind. Replicate padding at the borders (the
repos pad the same way). Results are not clipped (so AdaIN statistics match exactly); the pipeline clips to
[0, 1] before converting to uint8. The input is resized to the output's size when they differ.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["COLOR_FIXES", "adain_color_fix", "apply_color_fix", "wavelet_blur", "wavelet_color_fix",
           "wavelet_decompose"]

COLOR_FIXES = ("wavelet", "adain", "none")


def _as_bchw(x: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], np.ndarray | torch.Tensor]]:
    """Any supported image -> float32 (B, 3, H, W) tensor, plus a function that converts a result back."""
    if isinstance(x, torch.Tensor):
        if x.ndim not in (3, 4) or x.shape[-3] != 3:
            raise ValueError(f"expected a tensor (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
        dtype, single = x.dtype, x.ndim == 3
        t = x.float()
        t = t / 255.0 if dtype == torch.uint8 else t

        def back_t(y: torch.Tensor) -> torch.Tensor:
            y = y[0] if single else y
            return y.mul(255.0).round().clamp(0, 255).to(torch.uint8) if dtype == torch.uint8 else y.to(dtype)

        return (t[None] if single else t), back_t
    a = np.asarray(x)
    if a.ndim not in (3, 4) or a.shape[-1] != 3:
        raise ValueError(f"expected an array (H, W, 3) or (B, H, W, 3), got shape {a.shape}")
    is_u8, single = a.dtype == np.uint8, a.ndim == 3
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).movedim(-1, -3)
    t = t / 255.0 if is_u8 else t

    def back_a(y: torch.Tensor) -> np.ndarray:
        out = y.movedim(-3, -1).numpy()
        out = out[0] if single else out
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8) if is_u8 else out.astype(np.float32)

    return (t[None] if single else t), back_a


def _match_size(src: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if src.shape[-2:] == ref.shape[-2:]:
        return src
    return F.interpolate(src, size=ref.shape[-2:], mode="bicubic", align_corners=False, antialias=True)


def wavelet_blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """One a-trous level: depthwise 3x3 [1, 2, 1] / 4 Gaussian with `dilation`, replicate padding; (B, C, H, W)."""
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 3, 3)  # (C, 1, 3, 3)
    padded = F.pad(x, (dilation,) * 4, mode="replicate")  # (B, C, H + 2d, W + 2d)
    return F.conv2d(padded, kernel, groups=x.shape[1], dilation=dilation)


def wavelet_decompose(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> (high, low) with high + low == x: low is `levels` a-trous blurs (dilations 1, 2, 4, ...)."""
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    low = x
    for i in range(levels):
        low = wavelet_blur(low, 2**i)
    return x - low, low


def wavelet_color_fix(output: np.ndarray | torch.Tensor, input: np.ndarray | torch.Tensor,
                      levels: int = 5) -> np.ndarray | torch.Tensor:
    """The output's high frequencies + the input's low frequencies (same kind and shape as `output`)."""
    out, back = _as_bchw(output)
    inp, _ = _as_bchw(input)
    inp = _match_size(inp.to(out.device), out)
    high, _ = wavelet_decompose(out, levels)
    _, low = wavelet_decompose(inp, levels)
    return back(high + low)


def adain_color_fix(output: np.ndarray | torch.Tensor, input: np.ndarray | torch.Tensor,
                    eps: float = 1e-5) -> np.ndarray | torch.Tensor:
    """Give each channel of `output` the mean and standard deviation of the input's channel."""
    out, back = _as_bchw(output)
    inp, _ = _as_bchw(input)
    inp = _match_size(inp.to(out.device), out)
    mu_o, sd_o = out.mean((-2, -1), keepdim=True), out.std((-2, -1), keepdim=True)  # (B, 3, 1, 1)
    mu_i, sd_i = inp.mean((-2, -1), keepdim=True), inp.std((-2, -1), keepdim=True)
    return back((out - mu_o) / (sd_o + eps) * sd_i + mu_i)


def apply_color_fix(name: str | None, output: np.ndarray | torch.Tensor,
                    input: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Dispatch by name: "wavelet", "adain", or "none"/None (output unchanged)."""
    if name is None or name == "none":
        return output
    if name == "wavelet":
        return wavelet_color_fix(output, input)
    if name == "adain":
        return adain_color_fix(output, input)
    raise ValueError(f"unknown color_fix {name!r}; allowed: {', '.join(COLOR_FIXES)}")
