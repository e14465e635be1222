"""SMART layer and LargeConvLayer of VSPBFR's restoration network (multi-dilation style-modulated aggregation).

Paper component: the "SMART layers" (style-modulated aggregation transformation) of the restoration auto-encoder in
Fig. 1(c) of Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration" (arXiv
2412.21042, Pattern Recognition 161, 2025). The paper body was not reachable, so the structure follows the released
code (github.com/LonglongaaaGo/VSPBFR `models/RestoreNet.py`, classes `SMART_layer`, `Dilated_ModulatedConv2d`,
`LargeConvLayer`; facts only, summary in docs/architecture.md#vspbfr). Despite its name the layer holds no
attention; it is an AOT-GAN-style aggregation of dilated StyleGAN2 modulated convolutions:

    s = EqualLinear(style_dim -> C_in, bias init 1)(style)               one modulation shared by every branch
    b_d = demod(scale * W_d * s) (*) x,  d in (1, 2, 4, 8)                 C_out / 4 channels each, padding d(k-1)/2
    out = FusedLeakyReLU(NoiseInjection(ConvLayer3x3(concat_d b_d)))      (the fusion ConvLayer has its own lrelu)

`LargeConvLayer` is the unmodulated analogue used by the encoder's stem and 4x4 head: dilated equalized convs
(C_out / 4 channels each, no bias) -> concat -> 1x1 ConvLayer (with lrelu) -> FusedLeakyReLU.

Parameter names are the official ones (`modulation`, `ModulatedConv2ds.{i}.weight` (1, O/n, I, k, k), `fusion.0`,
`fusion.1`, `noise`, `activate`; `dilated_convs.{i}`, `fusion`, `activate`), so the released checkpoints load
without a key map. Our choices: the dilation tuple is configurable (the channel count must divide evenly, checked);
an odd kernel size is required so every dilation keeps the spatial size; noise is drawn from an optional
`torch.Generator`; `branch_outputs` exposes the pre-fusion branch features; the official `downsample` option of
LargeConvLayer (unused by the restoration network) is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from honestface.models.vspbfr.layers import ConvLayer, EqualConv2d, EqualLinear, FusedLeakyReLU, NoiseInjection

__all__ = ["DEFAULT_DILATIONS", "DilatedModulatedConv2d", "LargeConvLayer", "SMARTLayer"]

DEFAULT_DILATIONS: tuple[int, ...] = (1, 2, 4, 8)


def _check_split(name: str, out_channel: int, dilations: Sequence[int], kernel_size: int) -> tuple[int, ...]:
    dilations = tuple(int(d) for d in dilations)
    if not dilations or any(d < 1 for d in dilations):
        raise ValueError(f"{name}: dilations must be a non-empty sequence of ints >= 1, got {dilations}")
    if out_channel % len(dilations):
        raise ValueError(f"{name}: out_channel={out_channel} is not divisible by the {len(dilations)} dilation "
                         f"branches {dilations}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"{name}: kernel_size must be odd to keep the spatial size, got {kernel_size}")
    return dilations


class DilatedModulatedConv2d(nn.Module):
    """One SMART branch: a dilated modulated conv whose (already modulated) style vector comes from outside.

    Shapes: x (B, I, H, W), s (B, I) -> (B, O, H, W). Param `weight` (1, O, I, k, k), scaled by 1/sqrt(I k k).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, dilation: int = 1,
                 demodulate: bool = True) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.dilation, self.demodulate = dilation, demodulate
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = dilation * (kernel_size - 1) // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if s.shape != (b, c):
            raise ValueError(f"DilatedModulatedConv2d: modulation must be (B, I) = {(b, c)}, got {tuple(s.shape)}")
        weight = self.scale * self.weight * s.view(b, 1, c, 1, 1)  # (B, O, I, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        k, o = self.kernel_size, self.out_channel
        out = F.conv2d(x.reshape(1, b * c, h, w), weight.to(x.dtype).reshape(b * o, c, k, k),
                       padding=self.padding, dilation=self.dilation, groups=b)
        return out.view(b, o, h, w)

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, dilation={self.dilation}, "
                f"demodulate={self.demodulate}")


class SMARTLayer(nn.Module):
    """SMART: shared modulation -> len(dilations) dilated modulated convs -> concat -> fusion conv -> noise -> lrelu.

    Args:
        in_channel, out_channel: feature widths (out_channel must be divisible by len(dilations)).
        kernel_size: odd branch kernel size (3 in VSPBFR). style_dim: width of the style vector.
        dilations: one branch per dilation rate. demodulate: StyleGAN2 weight demodulation per branch.
        activate: the final FusedLeakyReLU (official default True).
    Shapes: x (B, C_in, H, W), style (B, style_dim) -> (B, C_out, H, W).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 dilations: Sequence[int] = DEFAULT_DILATIONS, demodulate: bool = True, activate: bool = True) -> None:
        super().__init__()
        self.dilations = _check_split("SMARTLayer", out_channel, dilations, kernel_size)
        self.in_channel, self.out_channel = in_channel, out_channel
        branch = out_channel // len(self.dilations)
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        self.ModulatedConv2ds = nn.ModuleList(  # official name, kept for checkpoint compatibility
            DilatedModulatedConv2d(in_channel, branch, kernel_size, dilation=d, demodulate=demodulate)
            for d in self.dilations)
        self.fusion = ConvLayer(out_channel, out_channel, 3)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel) if activate else None

    def branch_outputs(self, x: torch.Tensor, style: torch.Tensor) -> list[torch.Tensor]:
        """The pre-fusion branch features, one (B, C_out / n, H, W) map per dilation."""
        if x.ndim != 4 or x.shape[1] != self.in_channel:
            raise ValueError(f"SMARTLayer: expected x of shape (B, {self.in_channel}, H, W), got {tuple(x.shape)}")
        s = self.modulation(style.to(x.dtype))  # (B, C_in)
        return [conv(x, s) for conv in self.ModulatedConv2ds]

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        out = torch.cat(self.branch_outputs(x, style), dim=1)  # (B, C_out, H, W)
        out = self.fusion(out)
        out = self.noise(out, noise=noise, generator=generator)
        return out if self.activate is None else self.activate(out)


class LargeConvLayer(nn.Module):
    """Unmodulated multi-dilation conv: dilated EqualConv2d branches -> concat -> 1x1 ConvLayer -> FusedLeakyReLU.

    Shapes: x (B, C_in, H, W) -> (B, C_out, H, W). With `activate=False` the branches carry a bias and the final
    activation is dropped (official semantics).
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int,
                 dilations: Sequence[int] = DEFAULT_DILATIONS, activate: bool = True) -> None:
        super().__init__()
        self.dilations = _check_split("LargeConvLayer", out_channel, dilations, kernel_size)
        self.in_channel, self.out_channel = in_channel, out_channel
        branch = out_channel // len(self.dilations)
        self.dilated_convs = nn.ModuleList(
            EqualConv2d(in_channel, branch, kernel_size, padding=d * (kernel_size - 1) // 2, bias=not activate,
                        dilation=d)
            for d in self.dilations)
        self.fusion = ConvLayer(out_channel, out_channel, 1)
        self.activate = FusedLeakyReLU(out_channel) if activate else None

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pre-fusion branch features, one (B, C_out / n, H, W) map per dilation."""
        if x.ndim != 4 or x.shape[1] != self.in_channel:
            raise ValueError(f"LargeConvLayer: expected x of shape (B, {self.in_channel}, H, W), got {tuple(x.shape)}")
        return [conv(x) for conv in self.dilated_convs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fusion(torch.cat(self.branch_outputs(x), dim=1))  # (B, C_out, H, W)
        return out if self.activate is None else self.activate(out)
