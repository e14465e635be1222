"""StyleGAN2 building blocks in pure PyTorch (no custom CUDA ops), shared by every VSPBFR network.

Paper component: the "style layers" of VSPBFR (Lu et al., arXiv 2412.21042): StyleGAN2 weight modulation /
demodulation, noise injection, skip-ToRGB, the equalized-learning-rate convs and linears and the ResNet
discriminator blocks. The maths follows Karras et al., "Analyzing and Improving the Image Quality of StyleGAN"
(CVPR 2020): equalized lr (runtime weight scale 1/sqrt(fan_in), times `lr_mul`), modulation
w'_oik = s_i * w_oik, demodulation w''_oik = w'_oik / sqrt(sum_ik w'_oik^2 + 1e-8), FIR up/down-sampling with the
[1, 3, 3, 1] binomial filter, leaky ReLU 0.2 with gain sqrt(2).

Parameter and buffer names follow the rosinality port (github.com/rosinality/stylegan2-pytorch, `model.py`) so that
its checkpoints (`stylegan2-ffhq-config-f.pt`) and the VSPBFR checkpoints built on it load without a key map:
`weight`, `bias`, `modulation`, `noise`, `activate`, `kernel`, `conv`, `upsample`, `conv1`/`conv2`/`skip`, and the
`nn.Sequential` numbering of `ConvLayer` ([Blur], EqualConv2d, [FusedLeakyReLU]). The semantics of `upfirdn2d`
(pad, upsample by zero insertion, FIR with the flipped kernel, downsample by striding) are those of rosinality's
reference `upfirdn2d_native`; the padding arithmetic of Blur/Upsample/ModulatedConv2d is StyleGAN2's.

Our choices: FIR filtering is one depthwise `conv2d` (downsampling folded into its stride); fixed buffers are cast
to the input's dtype, so the blocks run in fp32/bf16/fp16 on any device; `dilation` on EqualConv2d / ModulatedConv2d /
StyledConv / ConvLayer (needed by VSPBFR's SMART layers; padding d*(k-1)/2 keeps the size); noise sampling takes an
optional `torch.Generator` (drawn in fp32 on the generator's device, then moved), so a seed gives the same noise on
every device and dtype; `PixelNorm` normalises the last dimension by default (identical to rosinality's dim 1 on
(B, D) codes, and also right for (B, N, D) W+ tokens); `ToRGB` adds a same-size skip when built without upsampling;
`stylegan_channels` extends the rosinality width table beyond 1024 px with the same 2^14 * multiplier / r rule.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Blur", "ConstantInput", "ConvLayer", "Downsample", "EqualConv2d", "EqualLinear", "FusedLeakyReLU",
    "ModulatedConv2d", "NoiseInjection", "PixelNorm", "ResBlock", "StyledConv", "ToRGB", "Upsample",
    "fused_leaky_relu", "make_kernel", "noise_hooks", "sample_noise", "stylegan_channels", "upfirdn2d",
]

SQRT2 = math.sqrt(2.0)


# ------------------------------------------------------------------------------------------------ functional ops

def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """leaky_relu(x + bias) * scale, with `bias` (C,) added on dim 1 (any number of trailing dims)."""
    if bias is not None:
        x = x + bias.to(x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


def make_kernel(k: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """A 2-D FIR kernel summing to 1: the outer product of a 1-D kernel with itself, or a given 2-D kernel."""
    # the checks run on a CPU copy (an explicit device beats a `torch.device("meta")` context), so modules can be
    # built on the meta device; a meta tensor given as `k` can only have its shape checked
    is_meta = isinstance(k, torch.Tensor) and k.device.type == "meta"
    ref = k if is_meta else torch.as_tensor(k, dtype=torch.float32, device="cpu")
    if ref.ndim not in (1, 2) or (not is_meta and float(ref.sum()) == 0.0):
        raise ValueError(f"make_kernel: expected a 1-D or 2-D kernel with a non-zero sum, got shape {tuple(ref.shape)}")
    k = torch.as_tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter and downsample `x` (B, C, H, W), like rosinality's upfirdn2d.

    `pad=(p0, p1)` pads both spatial axes by p0 before and p1 after (negative values crop). Output size per axis:
    (L * up + p0 + p1 - k + down) // down. `kernel` (kh, kw) is applied as a true convolution (flipped).
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d: expected x of shape (B, C, H, W), got {tuple(x.shape)}")
    if up < 1 or down < 1:
        raise ValueError(f"upfirdn2d: up and down must be >= 1, got up={up}, down={down}")
    b, c, h, w = x.shape
    p0, p1 = int(pad[0]), int(pad[1])
    if up > 1:  # zero insertion: every sample followed by up - 1 zeros along each axis
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[-2:]
        x = x[:, :, max(-p0, 0): hh - max(-p1, 0), max(-p0, 0): ww - max(-p1, 0)]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(device=x.device, dtype=x.dtype).view(1, 1, kh, kw).repeat(c, 1, 1, 1)
    return F.conv2d(x, weight, stride=down, groups=c)  # (B, C, H', W')


def sample_noise(shape: Sequence[int], *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """N(0, 1) noise of `shape` on `device`/`dtype`, reproducible from `generator` whatever the target device.

    With a generator, the numbers are drawn in fp32 on the generator's own device and then moved, so a CPU
    generator can seed CUDA models and the values do not depend on the dtype.
    """
    if generator is None:
        return torch.randn(tuple(shape), device=device, dtype=torch.float32).to(dtype or torch.float32)
    out = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=torch.float32)
    return out.to(device=device if device is not None else out.device, dtype=dtype or torch.float32)


# --------------------------------------------------------------------------------------------- small modules

class FusedLeakyReLU(nn.Module):
    """Per-channel bias + leaky ReLU + gain (rosinality `FusedLeakyReLU`; param `bias` (C,) when bias=True)."""

    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = SQRT2, bias: bool = True) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class PixelNorm(nn.Module):
    """x / sqrt(mean(x^2) + 1e-8) over `dim` (default last: the style dimension of (B, D) or (B, N, D))."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=self.dim, keepdim=True) + 1e-8)


class Blur(nn.Module):
    """FIR low-pass with padding `pad=(p0, p1)`; the kernel is scaled by factor^2 when it follows an upsampling."""

    def __init__(self, kernel: Sequence[int], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor ** 2
        self.register_buffer("kernel", k)
        self.pad = (int(pad[0]), int(pad[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C, factor*H, factor*W) by zero insertion and FIR filtering."""

    def __init__(self, kernel: Sequence[int], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, C, H/factor, W/factor) by FIR filtering and striding."""

    def __init__(self, kernel: Sequence[int], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, down=self.factor, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate: N(0, 1) weights scaled by 1/sqrt(in * k * k) at run time."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, dilation: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, (self.weight * self.scale).to(x.dtype), bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"


class EqualLinear(nn.Module):
    """Linear with equalized lr: weight N(0, 1)/lr_mul scaled by lr_mul/sqrt(in); bias scaled by lr_mul.

    Works on any leading dims (..., in_dim) -> (..., out_dim). `activation="fused_lrelu"` applies bias, leaky ReLU
    0.2 and gain sqrt(2).
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None) -> None:
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"EqualLinear: unknown activation {activation!r} (expected None or 'fused_lrelu')")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else (self.bias * self.lr_mul).to(x.dtype)
        out = F.linear(x, (self.weight * self.scale).to(x.dtype), bias)
        if self.activation == "fused_lrelu":
            out = F.leaky_relu(out, 0.2) * SQRT2
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


# ------------------------------------------------------------------------------------------ modulated layers

class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated (and by default demodulated) conv as one grouped conv over the batch.

    Shapes: x (B, I, H, W), style (B, style_dim) -> (B, O, H', W'), H' = 2H (upsample), H/2 (downsample), else H.
    Upsampling is a stride-2 transposed conv followed by Blur; downsampling is Blur then a stride-2 conv.
    `dilation` (only without up/down-sampling) uses padding dilation * (k - 1) / 2.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, downsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1),
                 dilation: int = 1) -> None:
        super().__init__()
        if upsample and downsample:
            raise ValueError("ModulatedConv2d: upsample and downsample are exclusive")
        if dilation != 1 and (upsample or downsample):
            raise ValueError(f"ModulatedConv2d: dilation={dilation} is only supported without up/down-sampling")
        if kernel_size % 2 == 0 and not (upsample or downsample) and kernel_size > 1:
            raise ValueError(f"ModulatedConv2d: kernel_size must be odd to keep the size, got {kernel_size}")
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.downsample, self.demodulate, self.dilation = upsample, downsample, demodulate, dilation
        factor = 2
        if upsample:
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        if downsample:
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = dilation * (kernel_size - 1) // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def modulated_weight(self, style: torch.Tensor) -> torch.Tensor:
        """The per-sample kernel (B, O, I, k, k) for styles (B, style_dim)."""
        s = self.modulation(style).view(style.shape[0], 1, self.in_channel, 1, 1)  # (B, 1, I, 1, 1)
        weight = self.scale * self.weight * s  # (B, O, I, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        return weight

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if style.shape[0] != b:
            raise ValueError(f"ModulatedConv2d: batch of x ({b}) and style ({style.shape[0]}) differ")
        k, o = self.kernel_size, self.out_channel
        weight = self.modulated_weight(style).to(x.dtype)  # (B, O, I, k, k)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * c, o, k, k)
            out = F.conv_transpose2d(x.reshape(1, b * c, h, w), weight, stride=2, groups=b)
            out = self.blur(out.view(b, o, *out.shape[-2:]))
        elif self.downsample:
            x = self.blur(x)
            out = F.conv2d(x.reshape(1, b * c, *x.shape[-2:]), weight.reshape(b * o, c, k, k), stride=2, groups=b)
            out = out.view(b, o, *out.shape[-2:])
        else:
            out = F.conv2d(x.reshape(1, b * c, h, w), weight.reshape(b * o, c, k, k), padding=self.padding,
                           dilation=self.dilation, groups=b)
            out = out.view(b, o, *out.shape[-2:])
        return out  # (B, O, H', W')

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
                f"downsample={self.downsample}, demodulate={self.demodulate}, dilation={self.dilation}")


class NoiseInjection(nn.Module):
    """image + weight * noise, with a learned scalar `weight` (init 0) and per-pixel noise (B, 1, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = image.shape
            noise = sample_noise((b, 1, h, w), generator=generator, device=image.device, dtype=image.dtype)
        return image + self.weight.to(image.dtype) * noise.to(image.dtype)


@contextlib.contextmanager
def noise_hooks(module: nn.Module, hook: Callable[[nn.Module, tuple, dict], tuple[tuple, dict]]) -> Iterator[None]:
    """While active, `hook(layer, args, kwargs) -> (args, kwargs)` runs before every NoiseInjection of `module`
    (a forward pre-hook with kwargs): how callers supply the noise maps."""
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in module.modules()
               if isinstance(m, NoiseInjection)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class ConstantInput(nn.Module):
    """A learned (1, C, size, size) tensor repeated over the batch (given as an int or a tensor's first dim)."""

    def __init__(self, channel: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch_size_or_tensor: int | torch.Tensor) -> torch.Tensor:
        batch = batch_size_or_tensor if isinstance(batch_size_or_tensor, int) else batch_size_or_tensor.shape[0]
        return self.input.repeat(batch, 1, 1, 1)  # (B, C, size, size)


class StyledConv(nn.Module):
    """ModulatedConv2d -> NoiseInjection -> FusedLeakyReLU (StyleGAN2's synthesis layer)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 downsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1), demodulate: bool = True,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, downsample=downsample, blur_kernel=blur_kernel,
                                    dilation=dilation)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        out = self.conv(x, style)  # (B, O, H', W')
        out = self.noise(out, noise=noise, generator=generator)
        return self.activate(out)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) + bias, plus the (upsampled) skip image from the previous resolution."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), out_channel: int = 3) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, out_channel, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_channel, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias.to(x.dtype)  # (B, out, H, W)
        if skip is not None:
            upsample = getattr(self, "upsample", None)
            out = out + (upsample(skip) if isinstance(upsample, nn.Module) else skip)
        return out


# ------------------------------------------------------------------------------------- discriminator blocks

class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d (stride 2 when downsampling) -> [FusedLeakyReLU], numbered like rosinality's."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), bias: bool = True, activate: bool = True,
                 dilation: int = 1) -> None:
        if downsample and dilation != 1:
            raise ValueError(f"ConvLayer: dilation={dilation} is only supported without downsampling")
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, dilation * (kernel_size - 1) // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate, dilation=dilation))
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual downsampling block: (conv3x3 -> blur-down conv3x3) + blur-down 1x1 skip, divided by sqrt(2)."""

    def __init__(self, in_channel: int, out_channel: int, blur_kernel: Sequence[int] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel, activate=False,
                              bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))  # (B, O, H/2, W/2)
        return (out + self.skip(x)) / SQRT2


def stylegan_channels(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """Feature width per resolution 4..size: rosinality's table (512 up to 32 px, then 2^14 * cm / r), capped."""
    if size < 4 or size & (size - 1):
        raise ValueError(f"stylegan_channels: size must be a power of two >= 4, got {size}")
    if channel_multiplier < 1 or channel_max < 1:
        raise ValueError(f"stylegan_channels: channel_multiplier ({channel_multiplier}) and channel_max "
                         f"({channel_max}) must be >= 1")
    out: dict[int, int] = {}
    res = 4
    while res <= size:
        full = 512 if res <= 32 else max(1, (1 << 14) * channel_multiplier // res)
        out[res] = min(full, channel_max)
        res *= 2
    return out
