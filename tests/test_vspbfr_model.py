"""The VSPBFR composite model (tiny preset, CPU): the inference chain, seeding, presets, save/load, official
checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from honestface.models.vspbfr import (
    CONFIG_FILE,
    VSPBFR,
    VSPBFR_PRESETS,
    WEIGHTS_FILE,
    build_vspbfr,
    is_vspbfr_folder,
    make_kernel,
)
from honestface.weights import MissingWeightError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


@pytest.fixture(scope="module")
def model() -> VSPBFR:
    return build_vspbfr("tiny", with_discriminator=True)


@pytest.fixture(scope="module")
def lq() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1  # (B, 3, 32, 32)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def test_forward_shapes_and_chain(model, lq):
    assert model.size == 32 and model.stylegan_size == 64 and model.n_latent == 10
    out = model(lq, generator=_gen(0))
    assert out.image.shape == (3, 3, 32, 32) and out.inverted.shape == (3, 3, 32, 32)
    assert out.w0.shape == out.w_hat.shape == (3, 10, 32)
    assert all(torch.isfinite(t).all() for t in (out.image, out.inverted, out.w0, out.w_hat))
    assert torch.equal(out.w_hat, model.encode_lq(lq))
    # the chain by hand: w0 from the diffusion, the inverted image is G(w0) average-pooled 64 -> 32 px
    w0 = model.style_prompt(out.w_hat, _gen(0))
    assert torch.equal(w0, out.w0)
    inverted, bank = model.feature_bank(w0, _gen(5))
    assert [f.shape[-1] for f in bank] == [4, 8, 16, 32, 64]
    full = model.stylegan(w0, generator=_gen(5)).image  # (B, 3, 64, 64)
    torch.testing.assert_close(inverted, torch.nn.functional.avg_pool2d(full, 2))
    # the restoration network uses the first n_latent (8 of 10) rows of w0: the last two do not matter
    w0_tail = w0.clone()
    w0_tail[:, 8:] += 5.0
    a = model.restore(lq, w0, bank, _gen(1))
    assert torch.equal(a, model.restore(lq, w0_tail, bank, _gen(1)))
    w0_head = w0.clone()
    w0_head[:, 0] += 5.0
    assert not torch.allclose(a, model.restore(lq, w0_head, bank, _gen(1)))


@torch.no_grad()
def test_seed_reproducible_and_batch_independent(model, lq):
    a = model(lq, generator=_gen(0), mixing=0.5).image
    assert torch.equal(a, model(lq, generator=_gen(0), mixing=0.5).image)
    assert (a - model(lq, generator=_gen(1), mixing=0.5).image).abs().mean() > 1e-3
    # one generator per sample: a face's output does not depend on its batch neighbours
    batched = model(lq, generator=[_gen(7), _gen(8), _gen(9)], mixing=0.5)
    for b in range(3):
        single = model(lq[b:b + 1], generator=[_gen(7 + b)], mixing=0.5)
        assert torch.equal(single.w0, batched.w0[b:b + 1])
        torch.testing.assert_close(single.image, batched.image[b:b + 1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        model(lq, generator=[_gen(0), _gen(1)])
    with pytest.raises(ValueError, match=r"lq must be \(B, 3, 32, 32\)"):
        model(torch.zeros(1, 3, 64, 64))


# Relative L2 error of each stage cast to bf16 against float32 on the same inputs: measured 0.4% (encoder),
# 1.5% (StyleGAN image and feature bank, restoration network) on the tiny preset; twice that is allowed.
BF16_STAGE_REL_ERR = 0.03


def test_bf16_stages_are_fp32_up_to_rounding(lq):
    """Each stage of the model cast to bf16 computes what float32 computes from the same inputs and seeds, up to
    bf16 rounding. (The whole forward is not compared: the random tiny code diffuser's 4-step chain amplifies any
    rounding, see test_vspbfr_code_diffuser.)"""
    import copy

    m = build_vspbfr("tiny").eval()
    half = copy.deepcopy(m).to(torch.bfloat16)

    def rel(full: torch.Tensor, low: torch.Tensor) -> float:
        assert low.dtype == torch.bfloat16
        return ((low.float() - full).norm() / full.norm()).item()

    with torch.no_grad():
        w_hat = m.encode_lq(lq)  # (B, n_latent, D)
        assert rel(w_hat, half.encode_lq(lq.bfloat16())) < BF16_STAGE_REL_ERR
        w0 = m.style_prompt(w_hat, [_gen(0)] * 3)
        inverted, bank = m.feature_bank(w0, [_gen(1)] * 3)
        inverted_h, bank_h = half.feature_bank(w0.bfloat16(), [_gen(1)] * 3)
        assert rel(inverted, inverted_h) < BF16_STAGE_REL_ERR
        assert all(rel(f, h) < BF16_STAGE_REL_ERR for f, h in zip(bank, bank_h, strict=True))
        image = m.restore(lq, w0, bank, [_gen(2)] * 3)
        image_h = half.restore(lq.bfloat16(), w0.bfloat16(), [f.bfloat16() for f in bank], [_gen(2)] * 3)
        assert rel(image, image_h) < BF16_STAGE_REL_ERR


def test_train_mode_keeps_frozen_parts_in_eval():
    m = build_vspbfr("tiny", with_discriminator=True).train()
    assert m.restoration.training and m.discriminator.training
    assert not (m.style_encoder.training or m.stylegan.training or m.code_diffuser.training)
    m.frozen_parts = ("stylegan",)  # e.g. a stage that trains the style encoder
    m.train()
    assert m.style_encoder.training and not m.stylegan.training


def test_presets_and_bad_configs():
    full = VSPBFR_PRESETS["full"]
    assert full["stylegan"]["size"] == 1024 and full["restoration"]["size"] == 512
    assert full["code_diffuser"]["n_tokens"] == full["style_encoder"]["n_styles"] == 18
    assert full["diffusion"] == {"num_timesteps": 4, "beta_start": 0.1, "beta_end": 0.99,
                                 "schedule": "scaled_linear"}
    meta = VSPBFR.from_config({**full, "discriminator": full["discriminator"]}, device="meta")  # no allocation
    assert meta.n_latent == 18 and meta.size == 512 and meta.stylegan.conv1.conv.weight.is_meta
    m = build_vspbfr("tiny", restoration={"code_dim": 48})
    assert m.restoration.code_dim == 48 and m.discriminator is None
    with pytest.raises(ValueError, match="unknown VSPBFR preset 'huge'"):
        build_vspbfr("huge")
    with pytest.raises(ValueError, match="unknown VSPBFR part"):
        build_vspbfr("tiny", decoder={"size": 8})
    with pytest.raises(ValueError, match="code diffuser codes"):
        build_vspbfr("tiny", code_diffuser={"n_tokens": 8})
    with pytest.raises(ValueError, match="feature bank widths"):
        build_vspbfr("tiny", restoration={"channel_max": 8})
    assert torch.equal(build_vspbfr("tiny", seed=4).stylegan.input.input, build_vspbfr("tiny", seed=4).stylegan.input.input)


def test_make_kernel_on_meta_device():
    with torch.device("meta"):
        k = make_kernel([1, 3, 3, 1])
    assert k.is_meta and k.shape == (4, 4)
    with pytest.raises(ValueError, match="non-zero sum"):
        make_kernel([1, -1])


def test_save_load_round_trip(model, lq, tmp_path):
    folder = model.save_pretrained(tmp_path / "m")
    assert is_vspbfr_folder(folder) and (folder / WEIGHTS_FILE).is_file()
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    assert cfg["format"] == "vspbfr" and cfg["diffusion"]["num_timesteps"] == 4
    assert cfg["restoration"]["size"] == 32 and cfg["discriminator"]["size"] == 32
    again = VSPBFR.from_pretrained(folder)
    assert again.discriminator is not None and not again.style_encoder.training
    state = model.state_dict()
    assert state.keys() == again.state_dict().keys()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in state.items())
    with torch.no_grad():
        assert torch.equal(model(lq, generator=_gen(2)).image, again(lq, generator=_gen(2)).image)
    inference = VSPBFR.from_pretrained(folder, with_discriminator=False)
    assert inference.discriminator is None
    # without a discriminator
    plain = build_vspbfr("tiny").save_pretrained(tmp_path / "plain")
    assert json.loads((plain / CONFIG_FILE).read_text())["discriminator"] is None
    assert VSPBFR.from_pretrained(plain).discriminator is None
    with pytest.raises(ValueError, match="holds no discriminator"):
        VSPBFR.from_pretrained(plain, with_discriminator=True)
    with pytest.raises(FileNotFoundError, match="no vspbfr_config.json"):
        VSPBFR.from_pretrained(tmp_path / "nowhere")


def _official_files(model: VSPBFR, folder) -> dict[str, str]:
    """The three released checkpoints' layouts, written from our tiny model's tensors."""
    enc = {k: v for k, v in model.style_encoder.state_dict().items() if k != "latent_avg"}
    sd = {**{f"encoder.{k}": v for k, v in enc.items()},
          **{f"decoder.{k}": v for k, v in model.stylegan.state_dict().items()}}
    g_ema = dict(model.restoration.state_dict())
    g_ema["noises.noise_0"] = torch.randn(1, 1, 4, 4)  # fixed-noise buffers the official net carries (unused)
    files = {"style_encoder_decoder": folder / "style_encoder_decoder.pt", "code_diffuser": folder / "cd.pt",
             "restoration": folder / "restoration_net.pt"}
    torch.save({"state_dict": sd, "latent_avg": model.style_encoder.latent_avg.clone(), "opts": {"n": 1}},
               files["style_encoder_decoder"])
    torch.save({"att_mapper": model.code_diffuser.state_dict(), "iter": 10}, files["code_diffuser"])
    g = {k: torch.zeros_like(v) for k, v in model.restoration.state_dict().items()}  # 'g' differs from 'g_ema'
    torch.save({"g": g, "d": {f"module.{k}": v for k, v in model.discriminator.state_dict().items()},
                "g_ema": g_ema, "iter": 3}, files["restoration"])
    return {k: str(v) for k, v in files.items()}


def test_from_official_checkpoints(model, lq, tmp_path, weights_home):
    source = build_vspbfr("tiny", with_discriminator=True, seed=11)
    with torch.no_grad():
        source.style_encoder.latent_avg.normal_()  # a non-trivial mean latent must travel too
    files = _official_files(source, tmp_path)
    loaded = VSPBFR.from_official(**files, preset="tiny", with_discriminator=True)
    want = source.state_dict()
    assert loaded.state_dict().keys() == want.keys()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, want[k]), k
    with torch.no_grad():
        assert torch.equal(loaded(lq, generator=_gen(0)).image, source.eval()(lq, generator=_gen(0)).image)
    assert VSPBFR.from_official(**files, preset="tiny").discriminator is None
    # a missing checkpoint names its registry entry and config key in one line
    with pytest.raises(MissingWeightError) as err:
        VSPBFR.from_official(style_encoder_decoder=files["style_encoder_decoder"],
                             restoration=files["restoration"], preset="tiny")
    msg = str(err.value)
    assert "vspbfr_code_diffuser" in msg and "weights.vspbfr_code_diffuser" in msg and "\n" not in msg
    with pytest.raises(MissingWeightError, match="weights.vspbfr_restoration"):
        VSPBFR.from_official(**{**files, "restoration": str(tmp_path / "gone.pt")}, preset="tiny")
    # a checkpoint of another configuration fails with one line naming the mismatch
    with pytest.raises(ValueError, match="does not match"):
        VSPBFR.from_official(**files, preset="tiny", overrides={"code_diffuser": {"n_blocks": 3}})
