"""VSPBFR SMART layer, LargeConvLayer and restoration network (tiny configs, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from honestface.models.vspbfr.layers import stylegan_channels
from honestface.models.vspbfr.restoration_net import (
    RestorationNetwork,
    load_official_restoration_state_dict,
)
from honestface.models.vspbfr.smart import LargeConvLayer, SMARTLayer
from honestface.models.vspbfr.stylegan2 import StyleGAN2Generator

TINY = {"size": 32, "style_dim": 16, "n_mlp": 2, "channel_max": 16, "code_dim": 32}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def net() -> RestorationNetwork:
    torch.manual_seed(0)
    model = RestorationNetwork(**TINY).eval()
    with torch.no_grad():  # make noise injection visible (it is initialised to 0)
        for name, p in model.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.1)
    return model


@pytest.fixture(scope="module")
def inputs():
    g = gen(1)
    lq = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    w0 = torch.randn(2, 10, 16, generator=g)  # more rows than n_latent = 8: only the first 8 are used
    bank = [torch.randn(2, 16, r, r, generator=g) for r in (4, 8, 16, 32, 64)]  # 4 and 64 px are ignored
    return lq, w0, bank


def run(model, lq, w0, bank, seed=0, **kw):
    with torch.no_grad():
        return model(lq, w0, bank, generator=gen(seed), **kw)


# --------------------------------------------------------------------------------------------------- SMART

def test_smart_branches_are_dilated_modulated_convs_with_a_quarter_of_the_channels():
    torch.manual_seed(0)
    layer = SMARTLayer(8, 16, 3, style_dim=12)
    x, style = torch.randn(2, 8, 17, 17), torch.randn(2, 12)
    branches = layer.branch_outputs(x, style)
    assert [tuple(b.shape) for b in branches] == [(2, 4, 17, 17)] * 4
    s = layer.modulation(style)  # the one shared modulation
    for conv, d, out in zip(layer.ModulatedConv2ds, (1, 2, 4, 8), branches):
        w = conv.weight[0] * conv.scale * s[1].view(1, 8, 1, 1)  # sample 1: (4, 8, 3, 3)
        w = w / (w.pow(2).sum((1, 2, 3), keepdim=True) + 1e-8).sqrt()
        ref = F.conv2d(x[1:2], w, padding=d, dilation=d)
        torch.testing.assert_close(out[1:2], ref, atol=1e-5, rtol=1e-4)

    with torch.no_grad():
        layer.ModulatedConv2ds[2].weight.zero_()
    concat = torch.cat(layer.branch_outputs(x, style), dim=1)  # (2, 16, 17, 17)
    before = torch.cat(branches, dim=1)
    assert concat[:, 8:12].abs().max() == 0
    assert before[:, 8:12].abs().max() > 0
    torch.testing.assert_close(concat[:, :8], before[:, :8])
    torch.testing.assert_close(concat[:, 12:], before[:, 12:])


@pytest.mark.parametrize("dilations", [(1, 2, 4, 8), (1, 3), (2,)])
def test_smart_keeps_spatial_size_and_fuses_every_branch(dilations):
    torch.manual_seed(0)
    layer = SMARTLayer(6, 12, 3, style_dim=5, dilations=dilations)
    x = torch.randn(3, 6, 9, 11)
    out = layer(x, torch.randn(3, 5), generator=gen(0))
    assert out.shape == (3, 12, 9, 11) and torch.isfinite(out).all()
    assert len(layer.ModulatedConv2ds) == len(dilations)
    assert all(b.shape == (3, 12 // len(dilations), 9, 11) for b in layer.branch_outputs(x, torch.randn(3, 5)))


def test_smart_and_large_conv_reject_bad_splits():
    with pytest.raises(ValueError, match="divisible"):
        SMARTLayer(8, 10, 3, style_dim=4)
    with pytest.raises(ValueError, match="odd"):
        SMARTLayer(8, 8, 2, style_dim=4)
    with pytest.raises(ValueError, match="divisible"):
        LargeConvLayer(3, 6, 1)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        SMARTLayer(8, 8, 3, style_dim=4)(torch.randn(1, 7, 8, 8), torch.randn(1, 4))


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_large_conv_layer_shapes(kernel_size):
    torch.manual_seed(0)
    layer = LargeConvLayer(3, 16, kernel_size)
    x = torch.randn(2, 3, 12, 12)
    assert [b.shape for b in layer.branch_outputs(x)] == [torch.Size([2, 4, 12, 12])] * 4
    assert all(conv.bias is None for conv in layer.dilated_convs)  # the activations carry the biases
    assert [conv.dilation for conv in layer.dilated_convs] == [1, 2, 4, 8]
    out = layer(x)
    assert out.shape == (2, 16, 12, 12) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------- restoration net

def test_restoration_output_shape_and_styleganbank(net, inputs):
    lq, w0, bank = inputs
    out = run(net, lq, w0, bank, mixing=0.5)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    # the StyleGAN2 feature list under w0 (4..64 px from a larger generator) is accepted as the bank
    g = StyleGAN2Generator(size=64, style_dim=16, n_mlp=2, channel_max=16).eval()
    with torch.no_grad():
        feats = g(w0[:, :10], generator=gen(3), return_features=True).features
    assert [f.shape[-1] for f in feats] == [4, 8, 16, 32, 64]
    assert torch.isfinite(run(net, lq, w0, feats)).all()


def test_encoder_uses_flipped_odd_slots(net, inputs):
    lq, w0, _ = inputs
    assert net.n_latent == 8 and net.encoder_slots == [7, 5, 3]
    slots = net.decoder_slots  # every slot styles the decoder; ToRGB k shares its slot with the next up conv
    assert set(slots.values()) == set(range(8)) and slots["to_rgbs.2"] == 7 and slots["convs.3"] == 4
    assert slots["to_rgbs.0"] == slots["convs.2"] == 3
    z = torch.randn(2, 16, generator=gen(5))

    def encode(w):
        latent = net.style_latents(w, z)
        with torch.no_grad():
            return net.encode(lq, latent, generator=gen(0))

    c0, f0 = encode(w0)  # f = [e4, e8, e16, e32]

    def changed(slot):
        w = w0.clone()
        w[:, slot] += 1.0
        c, f = encode(w)
        return [not torch.equal(a, b) for a, b in zip(f, f0)], not torch.equal(c, c0)

    assert changed(7) == ([True, True, True, True], True)  # pair 0 (32 px): flipped slot 0
    assert changed(5) == ([True, True, True, False], True)  # pair 1 (16 px): flipped slot 2, e32 untouched
    assert changed(3) == ([True, True, False, False], True)  # pair 2 (8 px)
    for slot in (0, 1, 2, 4, 6):
        assert changed(slot) == ([False] * 4, False)
    w = w0.clone()
    w[:, 0] += 1.0
    assert not torch.equal(run(net, lq, w0, None), run(net, lq, w, None))  # slot 0 styles the decoder's conv1


def test_bank_is_fused(net, inputs):
    lq, w0, bank = inputs
    base = run(net, lq, w0, bank)
    moved = list(bank)
    moved[2] = bank[2] + 1.0  # the 16 px map
    assert not torch.equal(base, run(net, lq, w0, moved))
    ignored = list(bank)
    ignored[0] = bank[0] + 1.0  # the 4 px map is not used
    assert torch.equal(base, run(net, lq, w0, ignored))
    zeros = {r: torch.zeros(2, 16, r, r) for r in (8, 16, 32)}
    assert torch.equal(run(net, lq, w0, None), run(net, lq, w0, zeros))
    with pytest.raises(ValueError, match="16 px"):
        run(net, lq, w0, [bank[1], bank[3]])


def test_seed_reproducibility(net, inputs):
    lq, w0, bank = inputs
    a = run(net, lq, w0, bank, seed=7, mixing=0.5)
    assert torch.equal(a, run(net, lq, w0, bank, seed=7, mixing=0.5))
    assert not torch.equal(a, run(net, lq, w0, bank, seed=8, mixing=0.5))
    z = torch.randn(2, 16, generator=gen(2))
    a = run(net, lq, w0, bank, z=z, noise_generator=gen(1))
    assert not torch.equal(a, run(net, lq, w0, bank, z=z, noise_generator=gen(2)))  # noise injection only
    codes = net.sample_codes(2, generator=gen(4), mixing=1.0)
    assert codes.shape == (2, 8, 16)
    same_as_first = (codes == codes[:, :1]).all(-1).all(0).tolist()  # (8,) per slot
    cut = same_as_first.index(False)  # one crossover in [1, n_latent - 1], then the second code to the end
    assert 1 <= cut <= 7 and all(same_as_first[:cut]) and not any(same_as_first[cut:])
    assert (codes[:, cut:] == codes[:, -1:]).all()


def test_gradients_reach_every_parameter_and_not_detached_inputs(inputs):
    torch.manual_seed(0)
    model = RestorationNetwork(**TINY).train()
    lq, w0, bank = inputs
    out = model(lq, w0, bank, generator=gen(0), mixing=0.5)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    assert w0.grad is None and all(b.grad is None for b in bank)
    w0r = w0.clone().requires_grad_(True)
    model(lq, w0r, bank, generator=gen(0)).sum().backward()
    assert w0r.grad is not None and w0r.grad[:, 8:].abs().sum() == 0 and w0r.grad[:, :8].abs().sum() > 0


def official_keys(size: int, n_mlp: int) -> list[str]:
    """Key names of the released `Restoration_net` state dict (models/RestoreNet.py of LonglongaaaGo/VSPBFR)."""
    log = size.bit_length() - 1
    smart = ["modulation.weight", "modulation.bias", *(f"ModulatedConv2ds.{i}.weight" for i in range(4)),
             "fusion.0.weight", "fusion.1.bias", "noise.weight", "activate.bias"]
    styled = ["conv.weight", "conv.blur.kernel", "conv.modulation.weight", "conv.modulation.bias", "noise.weight",
              "activate.bias"]
    large = [*(f"dilated_convs.{i}.weight" for i in range(4)), "fusion.0.weight", "fusion.1.bias", "activate.bias"]
    rgb = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "bias"]
    keys = [f"conv1.{k}" for k in smart] + [f"to_rgb1.{k}" for k in rgb]
    keys += [f"style.{i}.{p}" for i in range(1, n_mlp + 1) for p in ("weight", "bias")]
    for j in range(log - 2):
        keys += [f"convs.{2 * j}.{k}" for k in styled] + [f"convs.{2 * j + 1}.{k}" for k in smart]
        keys += [f"to_rgbs.{j}.{k}" for k in ("upsample.kernel", *rgb)]
        keys += [f"encoder_convs.{2 * j}.{k}" for k in smart] + [f"encoder_convs.{2 * j + 1}.{k}" for k in styled]
    keys += [f"noises.noise_{i}" for i in range(2 * (log - 2) + 1)]
    keys += [f"down_from_big.{k}" for k in large] + [f"final_layer.{k}" for k in large]
    return keys + ["final_linear.0.weight", "final_linear.0.bias", "final_transfer.weight", "final_transfer.bias"]


def test_official_checkpoint_loads_strictly(net, inputs, tmp_path):
    ours = net.state_dict()
    keys = official_keys(32, 2)
    assert {k for k in keys if not k.startswith("noises.")} == set(ours)
    g = gen(9)
    sd = {k: torch.randn(ours[k].shape if k in ours else (1, 1, 4, 4), generator=g) for k in keys}
    path = tmp_path / "restoration_net.pt"
    torch.save({"g": {k: v + 1 for k, v in sd.items()}, "d": {}, "g_ema": sd}, path)
    model = load_official_restoration_state_dict(RestorationNetwork(**TINY), path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, sd[name]), name
    model = load_official_restoration_state_dict(RestorationNetwork(**TINY), {"g": sd}, key="g")
    assert torch.equal(model.conv1.modulation.weight, sd["conv1.modulation.weight"])
    with pytest.raises(RuntimeError, match="final_transfer.bias"):
        load_official_restoration_state_dict(RestorationNetwork(**TINY),
                                             {"g_ema": {k: v for k, v in sd.items() if k != "final_transfer.bias"}})
    with pytest.raises(ValueError, match="'g_ema'"):
        load_official_restoration_state_dict(RestorationNetwork(**TINY), {"args": None})


def test_save_and_load_pretrained_round_trip(net, inputs, tmp_path):
    lq, w0, bank = inputs
    net.save_pretrained(tmp_path)
    loaded = RestorationNetwork.from_pretrained(tmp_path).eval()
    assert loaded.config.code_dim == 32 and tuple(loaded.config.dilations) == (1, 2, 4, 8)
    assert torch.equal(run(net, lq, w0, bank, mixing=0.5), run(loaded, lq, w0, bank, mixing=0.5))


def test_input_validation(net, inputs):
    lq, w0, bank = inputs
    with pytest.raises(ValueError, match="lq"):
        run(net, lq[:, :, :16, :16], w0, bank)
    with pytest.raises(ValueError, match="w0"):
        run(net, lq, w0[:, :7], bank)
    with pytest.raises(ValueError, match="mixing"):
        run(net, lq, w0, bank, mixing=1.5)
    with pytest.raises(ValueError, match="size"):
        RestorationNetwork(size=48)


def analytic_count(size=512, style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=512, code_dim=1024) -> int:
    """Parameter count from the layer definitions (vspbfr.md section 6)."""
    ch = stylegan_channels(size, channel_multiplier, channel_max)
    enc, dec = 2 * style_dim, 2 * style_dim + code_dim

    def smart(ci, co, sd):  # modulation, 4 branches, 3x3 fusion + its bias, noise, activation bias
        return sd * ci + ci + 9 * ci * co + 9 * co * co + co + 1 + co

    def styled(ci, co, sd):
        return sd * ci + ci + 9 * ci * co + 1 + co

    def large(ci, co, k):
        return k * k * ci * co + co * co + co + co

    def rgb(ci, sd):
        return sd * ci + ci + 3 * ci + 3

    res = [2 ** i for i in range(3, size.bit_length())]
    total = n_mlp * (style_dim ** 2 + style_dim) + large(3, ch[size], 1) + large(ch[4], ch[4], 3)
    total += 16 * ch[4] * code_dim + code_dim + code_dim * 16 * ch[4] + 16 * ch[4]
    total += smart(ch[4], ch[4], dec) + rgb(ch[4], dec)
    for r in res:
        total += smart(ch[r], ch[r], enc) + styled(ch[r], ch[r // 2], enc)
        total += styled(ch[r // 2], ch[r], dec) + smart(ch[r], ch[r], dec) + rgb(ch[r], dec)
    return total


def test_parameter_count(net):
    assert sum(p.numel() for p in net.parameters()) == analytic_count(**TINY)
    cfg = {"size": 64, "style_dim": 8, "n_mlp": 1, "channel_multiplier": 1, "channel_max": 24, "code_dim": 12}
    assert sum(p.numel() for p in RestorationNetwork(**cfg).parameters()) == analytic_count(**cfg)
    assert analytic_count() == 112_550_773  # the full default config (512 px): ~112.6 M as in vspbfr.md
