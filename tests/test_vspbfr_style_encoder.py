"""VSPBFR style encoder (honestface.models.vspbfr.style_encoder): e4e Encoder4Editing on an IR-SE body.

Tiny config: shapes, in-forward resize, no NaN; latent_avg is added (and broadcast); progressive stages add exactly
the deltas of styles 1..stage (stage 0 = the base code on every row); gradients reach every parameter; an
official-layout e4e checkpoint (written here from the reference key names, random tensors) loads strictly and
mismatches are one-line errors; the full IR-SE-50 layout equals e4e's key/shape table; save/load round trip.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from honestface.models.vspbfr.style_encoder import StyleEncoder, load_e4e_state_dict, style_split

TINY = {"n_styles": 8, "style_dim": 32, "input_size": 64, "units": (1, 1, 1, 1), "widths": (8, 16, 16, 32),
        "se_reduction": 4}
B = 2


@pytest.fixture
def encoder() -> StyleEncoder:
    torch.manual_seed(0)
    return StyleEncoder(**TINY).eval()


def _images(seed: int, size: int = 64) -> torch.Tensor:
    return torch.rand(B, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _e4e_layout(units, widths, n_styles, style_dim, input_size, se_reduction) -> dict[str, tuple[int, ...]]:
    """{key: shape} of e4e's Encoder4Editing state dict (without the `encoder.` prefix), from its layer rules."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["input_layer.0.weight"] = (widths[0], 3, 3, 3)
    bn("input_layer.1", widths[0])
    shapes["input_layer.2.weight"] = (widths[0],)
    k, cin = 0, widths[0]
    for n_units, depth in zip(units, widths):
        for _ in range(n_units):
            p = f"body.{k}"
            if cin != depth:
                shapes[f"{p}.shortcut_layer.0.weight"] = (depth, cin, 1, 1)
                bn(f"{p}.shortcut_layer.1", depth)
            bn(f"{p}.res_layer.0", cin)
            shapes[f"{p}.res_layer.1.weight"] = (depth, cin, 3, 3)
            shapes[f"{p}.res_layer.2.weight"] = (depth,)
            shapes[f"{p}.res_layer.3.weight"] = (depth, depth, 3, 3)
            bn(f"{p}.res_layer.4", depth)
            shapes[f"{p}.res_layer.5.fc1.weight"] = (depth // se_reduction, depth, 1, 1)
            shapes[f"{p}.res_layer.5.fc2.weight"] = (depth, depth // se_reduction, 1, 1)
            k, cin = k + 1, depth
    for i in range(n_styles):
        spatial = input_size // (16 if i < 3 else 8 if i < 7 else 4)
        for j in range(int(math.log2(spatial))):
            shapes[f"styles.{i}.convs.{2 * j}.weight"] = (style_dim, widths[3] if j == 0 else style_dim, 3, 3)
            shapes[f"styles.{i}.convs.{2 * j}.bias"] = (style_dim,)
        shapes[f"styles.{i}.linear.weight"] = (style_dim, style_dim)
        shapes[f"styles.{i}.linear.bias"] = (style_dim,)
    shapes |= {"latlayer1.weight": (widths[3], widths[2], 1, 1), "latlayer1.bias": (widths[3],),
               "latlayer2.weight": (widths[3], widths[1], 1, 1), "latlayer2.bias": (widths[3],)}
    return shapes


def _random_checkpoint(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    layout = _e4e_layout(TINY["units"], TINY["widths"], 8, 32, 64, 4)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state["encoder." + key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state["encoder." + key] = torch.rand(shape, generator=g) + 0.5
        else:
            state["encoder." + key] = torch.randn(shape, generator=g) * 0.1
    state["decoder.style.1.weight"] = torch.randn(32, 32, generator=g)  # StyleGAN2 keys are ignored
    return {"state_dict": state, "latent_avg": torch.randn(8, 32, generator=g), "opts": {"stylegan_size": 1024}}


def test_shapes_resize_and_finite(encoder):
    with torch.no_grad():
        w = encoder(_images(1))
        big = torch.rand(B, 3, 80, 80, generator=torch.Generator().manual_seed(2)) * 2 - 1
        resized = F.interpolate(big, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(encoder(big), encoder(resized))
    assert w.shape == (B, 8, 32) and torch.isfinite(w).all()
    assert (encoder.coarse_ind, encoder.middle_ind) == (3, 7)
    with pytest.raises(ValueError, match="image must be"):
        encoder(torch.rand(B, 1, 64, 64))
    with pytest.raises(ValueError, match="input_size"):
        StyleEncoder(**{**TINY, "input_size": 48})


def test_latent_avg_is_added(encoder):
    x = _images(3)
    with torch.no_grad():
        w0 = encoder(x)
        avg = torch.randn(8, 32)
        encoder.set_latent_avg(avg)
        torch.testing.assert_close(encoder(x) - w0, avg.expand(B, 8, 32))
        encoder.set_latent_avg(avg[0])  # (style_dim,) is repeated over the styles
        torch.testing.assert_close(encoder(x) - w0, avg[0].expand(B, 8, 32))
        plain = StyleEncoder(**TINY, start_from_latent_avg=False).eval()
        plain.load_state_dict({k: v for k, v in encoder.state_dict().items() if k != "latent_avg"})
        torch.testing.assert_close(plain(x), w0)
    assert plain.latent_avg is None and "latent_avg" not in plain.state_dict()
    with pytest.raises(ValueError, match="latent_avg"):
        encoder.set_latent_avg(torch.randn(3, 32))


def test_progressive_stages_add_deltas_in_order(encoder):
    x = _images(4)
    with torch.no_grad():
        base = encoder(x, progressive_stage=0)
        assert torch.equal(base, base[:, :1].expand_as(base))  # stage 0: the base code on every row
        avg = torch.randn(8, 32)
        encoder.set_latent_avg(avg)
        full = encoder(x) - avg
        assert not torch.allclose(full[:, 1], full[:, 0])
        torch.testing.assert_close(full[:, 0], base[:, 0])
        torch.testing.assert_close(encoder(x, progressive_stage=100) - avg, full)
        for stage in (2, 5):
            w = encoder(x, progressive_stage=stage) - avg
            torch.testing.assert_close(w[:, : stage + 1], full[:, : stage + 1])
            torch.testing.assert_close(w[:, stage + 1:], full[:, :1].expand(-1, 7 - stage, -1))
    with pytest.raises(ValueError, match="progressive_stage"):
        encoder(x, progressive_stage=-1)


def test_gradients_reach_every_parameter(encoder):
    encoder.train()
    encoder(_images(5)).square().mean().backward()
    dead = [n for n, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_official_checkpoint_loads_strictly(tmp_path):
    ckpt = _random_checkpoint()
    path = tmp_path / "style_encoder_decoder.pt"
    torch.save(ckpt, path)
    model = StyleEncoder.from_e4e(path, **TINY)
    own = model.state_dict()
    for key, value in ckpt["state_dict"].items():
        if key.startswith("encoder."):
            assert torch.equal(own[key.removeprefix("encoder.")], value), key
    assert torch.equal(own["latent_avg"], ckpt["latent_avg"])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(_images(6))).all()

    # a (1, D) mean latent is repeated; old files without num_batches_tracked still load
    old = {k: v for k, v in ckpt["state_dict"].items() if not k.endswith("num_batches_tracked")}
    load_e4e_state_dict(model, {"state_dict": old, "latent_avg": ckpt["latent_avg"][:1]})
    assert torch.equal(model.latent_avg, ckpt["latent_avg"][:1].expand(8, 32))

    broken = dict(ckpt["state_dict"])
    del broken["encoder.styles.7.linear.bias"]
    with pytest.raises(ValueError, match=r"missing keys: styles\.7\.linear\.bias") as err:
        load_e4e_state_dict(model, {**ckpt, "state_dict": broken})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="latent_avg"):
        load_e4e_state_dict(model, {"state_dict": ckpt["state_dict"]})
    with pytest.raises(ValueError, match="encoder"):
        load_e4e_state_dict(model, {"state_dict": {"decoder.x": torch.zeros(1)}, "latent_avg": ckpt["latent_avg"]})
    with pytest.raises(ValueError, match="wrong shape"):
        StyleEncoder.from_e4e(ckpt, **{**TINY, "widths": (8, 16, 16, 64)})
    with pytest.raises(FileNotFoundError):
        StyleEncoder.from_e4e(tmp_path / "missing.pt", **TINY)


def test_full_size_layout_matches_e4e():
    with torch.device("meta"):
        model = StyleEncoder()
    assert model.taps == (6, 20, 23)
    assert (model.coarse_ind, model.middle_ind) == (3, 7)
    expected = _e4e_layout((3, 4, 14, 3), (64, 128, 256, 512), 18, 512, 256, 16)
    expected["latent_avg"] = (18, 512)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected


def test_style_split_rules():
    assert style_split(18) == (3, 7) and style_split(14) == (3, 7) and style_split(8) == (3, 7)
    assert style_split(6) == (2, 4) and style_split(3) == (1, 2)
    assert style_split(10, 2, 5) == (2, 5)
    with pytest.raises(ValueError, match="middle_ind"):
        style_split(8, 3, 8)
    with pytest.raises(ValueError, match="n_styles"):
        style_split(2)


def test_save_load_round_trip(encoder, tmp_path):
    encoder.set_latent_avg(torch.randn(8, 32))
    encoder.save_pretrained(tmp_path / "enc")
    again = StyleEncoder.from_pretrained(tmp_path / "enc").eval()
    assert tuple(again.config.widths) == TINY["widths"]
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    x = _images(7)
    with torch.no_grad():
        assert torch.equal(encoder(x), again(x))
