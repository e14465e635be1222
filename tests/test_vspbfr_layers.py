"""StyleGAN2 building blocks of VSPBFR (honestface.models.vspbfr.layers): FIR resampling, equalized lr, modulated
convs (unit style == plain conv with the demodulated weight), noise, channel table."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from honestface.models.vspbfr.layers import (
    Blur,
    ConvLayer,
    Downsample,
    EqualConv2d,
    EqualLinear,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    ResBlock,
    StyledConv,
    ToRGB,
    Upsample,
    fused_leaky_relu,
    make_kernel,
    stylegan_channels,
    upfirdn2d,
)


def naive_upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int, down: int, pad: tuple[int, int]) -> torch.Tensor:
    """Definition by loops: out[y, x] = sum_ij u[y*down + i - p0, x*down + j - p0] * k[kh-1-i, kw-1-j], where u is x
    upsampled by zero insertion (u[n] = x[n / up] when up divides n, else 0; zero outside [0, L*up))."""
    b, c, h, w = x.shape
    kh, kw = k.shape
    p0, p1 = pad
    oh = (h * up + p0 + p1 - kh + down) // down
    ow = (w * up + p0 + p1 - kw + down) // down
    out = torch.zeros(b, c, oh, ow, dtype=torch.float64)
    for oy in range(oh):
        for ox in range(ow):
            acc = torch.zeros(b, c, dtype=torch.float64)
            for i in range(kh):
                for j in range(kw):
                    uy, ux = oy * down + i - p0, ox * down + j - p0
                    if 0 <= uy < h * up and 0 <= ux < w * up and uy % up == 0 and ux % up == 0:
                        acc += x[:, :, uy // up, ux // up].double() * float(k[kh - 1 - i, kw - 1 - j])
            out[:, :, oy, ox] = acc
    return out


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2)), (2, 1, (2, 1)), (1, 2, (2, 2)), (2, 2, (1, 1)),
                                         (1, 1, (-1, 2)), (3, 1, (0, 0))])
def test_upfirdn2d_matches_naive_definition(up, down, pad):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, generator=g)
    k = torch.randn(3, 4, generator=g)  # asymmetric and non-square: catches a missing flip or swapped axes
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = naive_upfirdn2d(x, k, up, down, pad)
    assert out.shape == ref.shape
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_resampling_modules_shapes_and_dc_gain():
    x = torch.ones(1, 2, 8, 8)
    up, down = Upsample((1, 3, 3, 1)), Downsample((1, 3, 3, 1))
    assert up(x).shape == (1, 2, 16, 16) and down(x).shape == (1, 2, 4, 4)
    # a constant image keeps its value away from the zero-padded border
    assert torch.allclose(up(x)[..., 3:-3, 3:-3], torch.ones(1, 2, 10, 10), atol=1e-6)
    assert torch.allclose(down(x)[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2), atol=1e-6)
    assert Blur((1, 3, 3, 1), pad=(2, 1))(x).shape == (1, 2, 8, 8)
    assert torch.allclose(make_kernel([1, 3, 3, 1]).sum(), torch.tensor(1.0))


def test_fused_leaky_relu_and_pixelnorm():
    x = torch.tensor([[-1.0, 2.0]]).view(1, 2, 1, 1)
    out = fused_leaky_relu(x, torch.tensor([0.5, -3.0]))
    assert torch.allclose(out.flatten(), torch.tensor([-0.1, -0.2]) * math.sqrt(2))
    w = torch.randn(2, 5, 7) * 3
    assert torch.allclose(PixelNorm()(w).pow(2).mean(-1), torch.ones(2, 5), atol=1e-4)


def test_equal_layers_runtime_scaling():
    lin = EqualLinear(8, 4, bias_init=0.5, lr_mul=0.01)
    x = torch.randn(3, 8)
    ref = F.linear(x, lin.weight * 0.01 / math.sqrt(8), lin.bias * 0.01)
    assert torch.allclose(lin(x), ref, atol=1e-6)
    act = EqualLinear(8, 4, activation="fused_lrelu")
    assert torch.allclose(act(x), F.leaky_relu(F.linear(x, act.weight / math.sqrt(8), act.bias), 0.2) * math.sqrt(2))
    with pytest.raises(ValueError, match="gelu"):
        EqualLinear(8, 4, activation="gelu")
    conv = EqualConv2d(3, 5, 3, padding=2, dilation=2)
    xi = torch.randn(1, 3, 9, 9)
    ref = F.conv2d(xi, conv.weight / math.sqrt(27), conv.bias, padding=2, dilation=2)
    assert torch.allclose(conv(xi), ref, atol=1e-6)


@pytest.mark.parametrize("dilation", [1, 2, 8])
def test_modulated_conv_with_unit_style_is_plain_conv_with_demodulated_weight(dilation):
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 10, 3, style_dim=7, dilation=dilation)
    with torch.no_grad():
        conv.modulation.weight.zero_()
        conv.modulation.bias.fill_(1.0)
    x = torch.randn(2, 6, 12, 12)
    out = conv(x, torch.randn(2, 7))
    w = conv.weight[0] / math.sqrt(6 * 9)  # (O, I, k, k)
    w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
    ref = F.conv2d(x, w, padding=dilation, dilation=dilation)
    assert out.shape == (2, 10, 12, 12)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_modulated_conv_per_sample_styles_and_resampling():
    torch.manual_seed(1)
    x, s = torch.randn(3, 4, 8, 8), torch.randn(3, 5)
    conv = ModulatedConv2d(4, 6, 3, 5)
    batched = conv(x, s)
    single = torch.cat([conv(x[i:i + 1], s[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], conv(x[:1], s[1:2])[0])  # the style matters
    assert ModulatedConv2d(4, 6, 3, 5, upsample=True)(x, s).shape == (3, 6, 16, 16)
    assert ModulatedConv2d(4, 6, 3, 5, downsample=True)(x, s).shape == (3, 6, 4, 4)
    with pytest.raises(ValueError, match="dilation"):
        ModulatedConv2d(4, 6, 3, 5, upsample=True, dilation=2)


def test_noise_injection_generator_and_styled_layers():
    inj = NoiseInjection()
    with torch.no_grad():
        inj.weight.fill_(1.0)
    img = torch.zeros(2, 3, 4, 4)
    a = inj(img, generator=torch.Generator().manual_seed(3))
    b = inj(img, generator=torch.Generator().manual_seed(3))
    c = inj(img, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 0], a[:, 2])  # one noise map shared by the channels
    sc = StyledConv(3, 5, 3, 6, dilation=4)
    assert sc(torch.randn(2, 3, 16, 16), torch.randn(2, 6)).shape == (2, 5, 16, 16)
    rgb = ToRGB(5, 6)
    out = rgb(torch.randn(2, 5, 8, 8), torch.randn(2, 6), skip=torch.randn(2, 3, 4, 4))
    assert out.shape == (2, 3, 8, 8)


def test_conv_layer_and_resblock_layout():
    layer = ConvLayer(4, 8, 3, downsample=True)
    assert [type(m).__name__ for m in layer] == ["Blur", "EqualConv2d", "FusedLeakyReLU"]
    assert layer[1].bias is None and layer[2].bias.shape == (8,)
    assert ConvLayer(4, 8, 3, dilation=4)(torch.randn(1, 4, 16, 16)).shape == (1, 8, 16, 16)
    block = ResBlock(4, 8)
    assert sorted(block.state_dict()) == sorted([
        "conv1.0.weight", "conv1.1.bias", "conv2.0.kernel", "conv2.1.weight", "conv2.2.bias", "skip.0.kernel",
        "skip.1.weight"])
    assert block(torch.randn(2, 4, 8, 8)).shape == (2, 8, 4, 4)


def test_stylegan_channels_table():
    assert stylegan_channels(1024) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64,
                                       1024: 32}
    assert stylegan_channels(512, channel_multiplier=1) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128,
                                                            256: 64, 512: 32}
    assert stylegan_channels(64, channel_max=16) == {4: 16, 8: 16, 16: 16, 32: 16, 64: 16}
    with pytest.raises(ValueError, match="48"):
        stylegan_channels(48)
