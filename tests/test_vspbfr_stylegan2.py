"""VSPBFR's StyleGAN2 generator / discriminator: tiny-config shapes, the facial feature bank, seeded noise, gradient
flow, save/load round trips, and loading a rosinality-layout state dict that must reproduce an independent
functional re-implementation of the reference forward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from honestface.models.vspbfr.discriminator import StyleGAN2Discriminator, minibatch_stddev
from honestface.models.vspbfr.stylegan2 import StyleGAN2Generator, load_rosinality_state_dict

TINY = {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_max": 16}
SQRT2 = math.sqrt(2.0)


@pytest.fixture(scope="module")
def gen() -> StyleGAN2Generator:
    torch.manual_seed(0)
    model = StyleGAN2Generator(**TINY).eval()
    with torch.no_grad():  # noise strengths start at 0; make the noise visible
        for name, p in model.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    return model


# ------------------------------------------------------------------------ rosinality layout and reference forward

def fir_kernel() -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k)
    return k / k.sum()


def rosinality_generator_state(size: int, style_dim: int, n_mlp: int, ch: int, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors under the key names of rosinality's `Generator.state_dict()` (all widths = ch)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd: dict[str, torch.Tensor] = {}
    for i in range(1, n_mlp + 1):  # style.0 is the PixelNorm
        sd[f"style.{i}.weight"] = r(style_dim, style_dim, scale=100.0)  # stored / lr_mul, as initialised
        sd[f"style.{i}.bias"] = r(style_dim, scale=10.0)
    sd["input.input"] = r(1, ch, 4, 4)

    def styled(prefix: str, up: bool) -> None:
        sd[f"{prefix}.conv.weight"] = r(1, ch, ch, 3, 3)
        if up:
            sd[f"{prefix}.conv.blur.kernel"] = fir_kernel() * 4
        sd[f"{prefix}.conv.modulation.weight"] = r(ch, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = 1 + r(ch, scale=0.1)
        sd[f"{prefix}.noise.weight"] = r(1, scale=0.5)
        sd[f"{prefix}.activate.bias"] = r(ch, scale=0.1)

    def to_rgb(prefix: str, up: bool) -> None:
        if up:
            sd[f"{prefix}.upsample.kernel"] = fir_kernel() * 4
        sd[f"{prefix}.conv.weight"] = r(1, 3, ch, 1, 1)
        sd[f"{prefix}.conv.modulation.weight"] = r(ch, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = 1 + r(ch, scale=0.1)
        sd[f"{prefix}.bias"] = r(1, 3, 1, 1, scale=0.1)

    styled("conv1", up=False)
    to_rgb("to_rgb1", up=False)
    n_res = int(math.log2(size)) - 2
    for j in range(n_res):
        styled(f"convs.{2 * j}", up=True)
        styled(f"convs.{2 * j + 1}", up=False)
        to_rgb(f"to_rgbs.{j}", up=True)
    for idx in range(2 * n_res + 1):
        res = 2 ** ((idx + 5) // 2)
        sd[f"noises.noise_{idx}"] = r(1, 1, res, res)
    return sd


def ref_upfirdn(x: torch.Tensor, k: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    b, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(b, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    kf = torch.flip(k, (0, 1)).to(x)
    return torch.cat([F.conv2d(x[:, i:i + 1], kf[None, None]) for i in range(c)], dim=1)


def ref_modconv(sd, p, x, style, demodulate=True, up=False):
    weight = sd[f"{p}.weight"][0]  # (O, I, k, k)
    _, i, k, _ = weight.shape
    mw, mb = sd[f"{p}.modulation.weight"], sd[f"{p}.modulation.bias"]
    s = style @ mw.t() / math.sqrt(mw.shape[1]) + mb  # (B, I)
    outs = []
    for b in range(x.shape[0]):
        wb = weight * s[b][None, :, None, None] / math.sqrt(i * k * k)
        if demodulate:
            wb = wb / torch.sqrt(wb.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if up:
            ob = F.conv_transpose2d(x[b:b + 1], wb.transpose(0, 1), stride=2)  # (1, O, 2H+1, 2W+1)
            ob = ref_upfirdn(ob, fir_kernel() * 4, 1, (1, 1))
        else:
            ob = F.conv2d(x[b:b + 1], wb, padding=k // 2)
        outs.append(ob)
    return torch.cat(outs)


def ref_generator(sd, w_plus, noises, size):
    """StyleGAN2 synthesis written straight from the state-dict tensors (rosinality semantics)."""
    def styled(p, x, style, noise, up=False):
        out = ref_modconv(sd, f"{p}.conv", x, style, up=up)
        out = out + sd[f"{p}.noise.weight"] * noise
        return F.leaky_relu(out + sd[f"{p}.activate.bias"].view(1, -1, 1, 1), 0.2) * SQRT2

    def to_rgb(p, x, style, skip):
        out = ref_modconv(sd, f"{p}.conv", x, style, demodulate=False) + sd[f"{p}.bias"]
        if skip is not None:
            out = out + ref_upfirdn(skip, fir_kernel() * 4, 2, (2, 1))
        return out

    x = sd["input.input"].expand(w_plus.shape[0], -1, -1, -1)
    x = styled("conv1", x, w_plus[:, 0], noises[0])
    skip = to_rgb("to_rgb1", x, w_plus[:, 1], None)
    for j in range(int(math.log2(size)) - 2):
        li = 1 + 2 * j
        x = styled(f"convs.{2 * j}", x, w_plus[:, li], noises[li], up=True)
        x = styled(f"convs.{2 * j + 1}", x, w_plus[:, li + 1], noises[li + 1])
        skip = to_rgb(f"to_rgbs.{j}", x, w_plus[:, li + 2], skip)
    return skip


def ref_mapping(sd, z, n_mlp, lr_mul=0.01):
    x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        w, b = sd[f"style.{i}.weight"], sd[f"style.{i}.bias"]
        x = F.leaky_relu(x @ (w * lr_mul / math.sqrt(w.shape[1])).t() + b * lr_mul, 0.2) * SQRT2
    return x


def test_rosinality_state_dict_loads_and_matches_reference_forward(tmp_path):
    size, style_dim, n_mlp, ch = 32, 24, 3, 12
    sd = rosinality_generator_state(size, style_dim, n_mlp, ch, seed=5)
    torch.save({"g_ema": sd, "args": {"size": size}}, tmp_path / "stylegan2.pt")
    model = StyleGAN2Generator.from_rosinality(tmp_path / "stylegan2.pt", channel_max=ch).eval()
    assert (model.config.size, model.config.style_dim, model.config.n_mlp) == (size, style_dim, n_mlp)

    g = torch.Generator().manual_seed(11)
    z = torch.randn(2, style_dim, generator=g)
    w_plus = torch.randn(2, model.n_latent, style_dim, generator=g)
    noises = [torch.randn(2, 1, s[2], s[3], generator=g) for s in model.noise_shapes()]
    with torch.no_grad():
        torch.testing.assert_close(model.mapping(z), ref_mapping(sd, z, n_mlp), atol=1e-5, rtol=1e-5)
        out = model(w_plus, noise=noises).image
        ref = ref_generator(sd, w_plus, noises, size)
        assert out.shape == ref.shape == (2, 3, size, size)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        # stored noise buffers are used with randomize_noise=False
        fixed = model(w_plus, randomize_noise=False).image
        ref_fixed = ref_generator(sd, w_plus, [sd[f"noises.noise_{i}"] for i in range(model.num_layers)], size)
        torch.testing.assert_close(fixed, ref_fixed, atol=1e-5, rtol=1e-5)


def test_rosinality_loader_errors_name_the_keys():
    sd = rosinality_generator_state(16, 8, 2, 8, seed=0)
    model = StyleGAN2Generator(size=16, style_dim=8, n_mlp=2, channel_max=8)
    broken = {k: v for k, v in sd.items() if k != "convs.1.noise.weight"}
    broken["convs.9.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: convs\.1\.noise\.weight; unexpected keys: convs\.9\.extra"):
        load_rosinality_state_dict(model, broken)
    with pytest.raises(ValueError, match="input.input"):
        load_rosinality_state_dict(model, {**sd, "input.input": torch.zeros(1, 4, 4, 4)})
    with pytest.raises(ValueError, match="prefix 'decoder.'"):
        StyleGAN2Generator.from_rosinality(sd, prefix="decoder.")
    prefixed = {f"decoder.{k}": v for k, v in sd.items()} | {"encoder.x": torch.zeros(1)}
    loaded = StyleGAN2Generator.from_rosinality(prefixed, prefix="decoder.", channel_max=8)
    assert torch.equal(loaded.input.input, sd["input.input"])


# ------------------------------------------------------------------------------------------------- generator

def test_generator_shapes_w_and_w_plus_and_feature_bank(gen):
    assert gen.n_latent == 8 and gen.num_layers == 7
    w = gen.mapping(torch.randn(3, 32))
    noises = gen.make_noise(3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out_w = gen(w, noise=noises, return_features=True)
        out_plus = gen(w[:, None].repeat(1, gen.n_latent, 1), noise=noises)
    assert out_w.image.shape == (3, 3, 32, 32) and torch.isfinite(out_w.image).all()
    torch.testing.assert_close(out_w.image, out_plus.image)
    assert out_plus.features is None
    assert gen.resolutions == [4, 8, 16, 32] and gen.feature_channels == {4: 16, 8: 16, 16: 16, 32: 16}
    assert [tuple(f.shape) for f in out_w.features] == [(3, gen.feature_channels[r], r, r) for r in gen.resolutions]
    with pytest.raises(ValueError, match=r"\(2, 7, 32\)"):
        gen(torch.randn(2, 7, 32))
    with pytest.raises(ValueError, match="7 noise tensors"):
        gen(w, noise=noises[:3])


def test_feature_bank_widths_follow_the_channel_table():
    g = StyleGAN2Generator(size=128, style_dim=16, n_mlp=1, channel_multiplier=1, channel_max=1024)
    assert g.feature_channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128}
    assert StyleGAN2Generator(size=1024, n_mlp=1, channel_max=8).n_latent == 18


def test_generator_seeded_noise_is_reproducible(gen):
    w = torch.randn(2, 32)
    with torch.no_grad():
        a = gen(w, generator=torch.Generator().manual_seed(7)).image
        b = gen(w, generator=torch.Generator().manual_seed(7)).image
        c = gen(w, generator=torch.Generator().manual_seed(8)).image
        d1 = gen(w, randomize_noise=False).image
        d2 = gen(w, randomize_noise=False).image
    assert torch.equal(a, b) and torch.equal(d1, d2)
    assert (a - c).abs().max() > 1e-3
    m1 = gen.mean_latent(64, generator=torch.Generator().manual_seed(1))
    m2 = gen.mean_latent(64, generator=torch.Generator().manual_seed(1))
    assert m1.shape == (1, 32) and torch.equal(m1, m2)


def test_generator_gradients_reach_every_parameter(gen):
    z = torch.randn(2, 32)
    out = gen(gen.mapping(z), generator=torch.Generator().manual_seed(0)).image
    gen.zero_grad()
    out.square().mean().backward()
    missing = [n for n, p in gen.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    gen.zero_grad()
    assert missing == []


def test_generator_bf16_runs(gen):
    g16 = StyleGAN2Generator(size=16, style_dim=8, n_mlp=1, channel_max=8).to(torch.bfloat16)
    out = g16(torch.randn(2, 8, dtype=torch.bfloat16), generator=torch.Generator().manual_seed(0),
              return_features=True)
    assert out.image.dtype == torch.bfloat16 and torch.isfinite(out.image.float()).all()


# --------------------------------------------------------------------------------------------- discriminator

@pytest.fixture(scope="module")
def disc() -> StyleGAN2Discriminator:
    torch.manual_seed(0)
    return StyleGAN2Discriminator(size=32, channel_max=16)


def test_discriminator_rosinality_key_layout(disc):
    expected = {"convs.0.0.weight", "convs.0.1.bias", "final_conv.0.weight", "final_conv.1.bias",
                "final_linear.0.weight", "final_linear.0.bias", "final_linear.1.weight", "final_linear.1.bias"}
    for i in range(1, 4):  # 32 -> 16 -> 8 -> 4
        expected |= {f"convs.{i}.{k}" for k in ("conv1.0.weight", "conv1.1.bias", "conv2.0.kernel", "conv2.1.weight",
                                                "conv2.2.bias", "skip.0.kernel", "skip.1.weight")}
    assert set(disc.state_dict()) == expected
    assert disc.final_conv[0].weight.shape == (16, 17, 3, 3) and disc.final_linear[0].weight.shape == (16, 256)


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 6])
def test_discriminator_shapes_and_gradients(disc, batch):
    x = torch.randn(batch, 3, 32, 32, requires_grad=True)
    out = disc(x)
    assert out.shape == (batch, 1) and torch.isfinite(out).all()
    disc.zero_grad()
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())
    disc.zero_grad()
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16\)"):
        disc(torch.randn(1, 3, 16, 16))


def test_minibatch_stddev_groups():
    x = torch.randn(6, 4, 2, 2)
    out = minibatch_stddev(x, group=4)  # 6 is not divisible by 4: groups of 3 = {0, 2, 4}, {1, 3, 5}
    assert out.shape == (6, 5, 2, 2) and torch.equal(out[:, :4], x)
    for members in ([0, 2, 4], [1, 3, 5]):
        expect = torch.sqrt(x[members].var(dim=0, unbiased=False) + 1e-8).mean()
        for m in members:
            assert torch.allclose(out[m, 4], expect.expand(2, 2), atol=1e-6)
    single = minibatch_stddev(x[:1])
    assert torch.allclose(single[0, 4], torch.full((2, 2), 1e-4))  # sqrt(0 + 1e-8)


# ------------------------------------------------------------------------------------------------ round trips

def test_save_pretrained_round_trip_is_bit_exact(gen, disc, tmp_path):
    gen.save_pretrained(tmp_path / "g")
    disc.save_pretrained(tmp_path / "d")
    g2 = StyleGAN2Generator.from_pretrained(tmp_path / "g").eval()
    d2 = StyleGAN2Discriminator.from_pretrained(tmp_path / "d")
    for a, b in ((gen, g2), (disc, d2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    w, x = torch.randn(2, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(gen(w, randomize_noise=False).image, g2(w, randomize_noise=False).image)
        assert torch.equal(disc(x), d2(x))
