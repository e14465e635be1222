"""One-step LoRA UNet generator: x0 formula vs diffusers schedulers, LoRA targets/merge/save/load (incl. OSDFace and
legacy key layouts), frozen VAE, loading a diffusers SD folder."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import save_file

from honestface.models.generator import DEFAULT_LORA_TARGETS, OneStepGenerator, normalize_lora_state_dict, one_step_x0
from honestface.models.presets import SD21_SCHEDULER_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG
from honestface.weights import MissingWeightError


def make_generator(**options) -> OneStepGenerator:
    torch.manual_seed(0)
    return OneStepGenerator.from_configs(TINY_UNET_CONFIG, TINY_VAE_CONFIG, SD21_SCHEDULER_CONFIG, **options).eval()


@pytest.fixture(scope="module")
def gen(randomize_lora) -> OneStepGenerator:
    g = make_generator(encode_mode="mode")
    randomize_lora(g)
    return g.eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.randn(2, 5, 32, generator=g)


def test_shapes_range_and_frozen_parts(gen, batch):
    lq, p = batch
    with torch.no_grad():
        x_hat, z_hat, z_lq, eps = gen(lq, p)
    assert z_lq.shape == z_hat.shape == eps.shape == (2, 4, 32, 32)
    assert x_hat.shape == (2, 3, 64, 64)
    assert torch.isfinite(x_hat).all() and x_hat.min() >= -1 and x_hat.max() <= 1
    trainable = {n for n, p in gen.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    assert trainable == {f"unet.{n}" for n, _ in gen.lora_named_parameters()}
    assert not any(p.requires_grad for p in gen.vae.parameters())
    gen.train()
    assert not gen.vae.training
    gen.eval()


def test_default_lora_targets_all_exist_in_unet():
    gen = make_generator()
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in gen.lora_named_parameters() if ".lora_A" in n}
    for target in DEFAULT_LORA_TARGETS:
        assert any(m == target or m.endswith("." + target) for m in wrapped), target
    assert gen.lora_rank == 16 and gen.lora_alpha == 16.0


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DDIMScheduler])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_matches_diffusers_scheduler_step(scheduler_cls, prediction_type):
    sched = scheduler_cls.from_config({**SD21_SCHEDULER_CONFIG, "prediction_type": prediction_type,
                                       "clip_sample": False})
    g = torch.Generator().manual_seed(3)
    x_t, out = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    if scheduler_cls is DDIMScheduler:
        sched.set_timesteps(1000)
    expected = sched.step(out, 399, x_t).pred_original_sample
    abar = OneStepGenerator.from_configs(TINY_UNET_CONFIG, TINY_VAE_CONFIG, SD21_SCHEDULER_CONFIG,
                                         lora_rank=0).alpha_bar(399)
    eps, x0 = one_step_x0(x_t, out, abar, prediction_type)
    torch.testing.assert_close(x0, expected, atol=1e-5, rtol=1e-5)
    if prediction_type == "epsilon":
        assert torch.equal(eps, out)
    else:  # eps recovered from v re-forms x_t with x0
        torch.testing.assert_close(abar**0.5 * x0 + (1 - abar) ** 0.5 * eps, x_t, atol=1e-5, rtol=1e-5)


def test_alpha_bar_399_of_sd21(gen):
    assert gen.alpha_bar() == pytest.approx(0.42609, abs=1e-4)
    assert gen.alphas_cumprod.dtype == torch.float64


def test_denoise_uses_z_as_x_t_without_noise(gen, batch):
    _, p = batch
    z = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        eps, z_hat = gen.denoise(z, p)
        out = gen.unet(z, 399, encoder_hidden_states=p).sample
    torch.testing.assert_close(eps, out)
    a = gen.alpha_bar()
    torch.testing.assert_close(z_hat, (z - (1 - a) ** 0.5 * out) / a**0.5, atol=1e-5, rtol=1e-5)


def test_encode_modes(batch):
    lq, _ = batch
    gen = make_generator(lora_rank=0)
    with torch.no_grad():
        assert torch.equal(gen.encode(lq, "mode"), gen.encode(lq, "mode"))
        a = gen.encode(lq, "sample", torch.Generator().manual_seed(114))
        b = gen.encode(lq, "sample", torch.Generator().manual_seed(114))
        c = gen.encode(lq, "sample", torch.Generator().manual_seed(115))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="encode mode"):
        gen.encode(lq, "mean")


def test_fresh_lora_leaves_output_unchanged(batch):
    lq, p = batch
    with_lora, without = make_generator(encode_mode="mode"), make_generator(encode_mode="mode", lora_rank=0)
    with torch.no_grad():
        torch.testing.assert_close(with_lora(lq, p)[0], without(lq, p)[0], atol=1e-6, rtol=0)


def test_merge_lora_matches_unmerged(gen, batch):
    lq, p = batch
    merged = copy.deepcopy(gen)
    merged.merge_lora()
    assert merged.lora_merged and not gen.lora_merged
    with torch.no_grad():
        a, b = gen(lq, p), merged(lq, p)
    assert (a[0] - b[0]).abs().max() < 1e-5
    assert (a[1] - b[1]).abs().max() < 1e-5
    assert not torch.equal(a[1], make_generator(encode_mode="mode", lora_rank=0)(lq, p)[1])  # the LoRA acts


def test_save_load_lora_round_trip(gen, batch, tmp_path):
    lq, p = batch
    path = gen.save_lora(tmp_path)
    assert path.name == "pytorch_lora_weights.safetensors"
    other = make_generator(encode_mode="mode", lora_rank=4, lora_target_modules=["to_q"])
    other.load_lora(tmp_path)
    assert other.lora_rank == 16 and other.lora_target_modules == list(DEFAULT_LORA_TARGETS)
    with torch.no_grad():
        assert torch.equal(other(lq, p)[0], gen(lq, p)[0])


def test_load_osdface_style_and_legacy_lora(batch, tmp_path, randomize_lora):
    lq, p = batch
    src = make_generator(encode_mode="mode", lora_rank=4, lora_alpha=8, lora_target_modules=["to_q", "to_v"])
    randomize_lora(src, seed=7)
    state = src.lora_state_dict()
    # OSDFace file: diffusers layout, `unet.` prefix, no metadata; alpha given by the caller (its CLI flag)
    save_file({f"unet.{k}": v for k, v in state.items()}, str(tmp_path / "osd.safetensors"))
    dst = make_generator(encode_mode="mode")
    dst.load_lora(tmp_path / "osd.safetensors", lora_alpha=8)
    assert sorted(dst.lora_target_modules) == sorted({k.rsplit(".lora_", 1)[0] for k in state})
    with torch.no_grad():
        assert torch.equal(dst(lq, p)[0], src(lq, p)[0])
    legacy = {f"unet.{k}".replace("lora_A.weight", "lora.down.weight").replace("lora_B.weight", "lora.up.weight"): v
              for k, v in state.items()}
    dst2 = make_generator(encode_mode="mode")
    dst2.load_lora(legacy, lora_alpha=8)
    with torch.no_grad():
        assert torch.equal(dst2(lq, p)[0], src(lq, p)[0])


def test_lora_key_normalisation_and_errors(tmp_path):
    w = torch.zeros(2, 3)
    state, alphas = normalize_lora_state_dict({
        "unet.a.attn1.processor.to_out_lora.up.weight": w, "unet.a.attn1.processor.to_out_lora.down.weight": w,
        "b.to_q.lora_A.default.weight": w, "b.to_q.lora_B.default.weight": w, "b.to_q.alpha": torch.tensor(4.0)})
    assert set(state) == {"a.attn1.to_out.0.lora_B.weight", "a.attn1.to_out.0.lora_A.weight",
                          "b.to_q.lora_A.weight", "b.to_q.lora_B.weight"}
    assert alphas == {"b.to_q": 4.0}
    with pytest.raises(ValueError, match="not a UNet LoRA tensor"):
        normalize_lora_state_dict({"unet.conv_in.weight": w})
    gen = make_generator(lora_rank=0)
    with pytest.raises(ValueError, match="does not have"):
        gen.load_lora({"nowhere.to_q.lora_A.weight": w, "nowhere.to_q.lora_B.weight": w.T})
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        gen.load_lora(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="no LoRA adapter"):
        gen.save_lora(tmp_path)
    with pytest.raises(ValueError, match="do not fit"):
        make_generator(lora_target_modules=["no_such_layer"])


def test_bad_options():
    with pytest.raises(ValueError, match="prediction_type"):
        make_generator(prediction_type="sample")
    with pytest.raises(ValueError, match="encode_mode"):
        make_generator(encode_mode="mean")
    with pytest.raises(ValueError, match="timestep"):
        make_generator(timestep=1000)


def test_from_sd_folder(tmp_path, batch, monkeypatch):
    lq, p = batch
    torch.manual_seed(0)
    unet, vae = UNet2DConditionModel.from_config(TINY_UNET_CONFIG), AutoencoderKL.from_config(TINY_VAE_CONFIG)
    unet.save_pretrained(tmp_path / "sd" / "unet")
    vae.save_pretrained(tmp_path / "sd" / "vae")
    DDIMScheduler.from_config(SD21_SCHEDULER_CONFIG).save_pretrained(tmp_path / "sd" / "scheduler")
    gen = OneStepGenerator.from_sd(tmp_path / "sd", encode_mode="mode", lora_rank=0)
    ref = OneStepGenerator(unet, vae, SD21_SCHEDULER_CONFIG, encode_mode="mode", lora_rank=0).eval()
    with torch.no_grad():
        assert torch.equal(gen(lq, p)[0], ref(lq, p)[0])
    assert gen.prediction_type == "epsilon"
    with pytest.raises(FileNotFoundError, match="bad lacks unet/config.json"):
        (tmp_path / "bad" / "unet").mkdir(parents=True)
        OneStepGenerator.from_sd(tmp_path / "bad")
    monkeypatch.setenv("HONESTFACE_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(MissingWeightError, match="sd21_base"):
        OneStepGenerator.from_sd()


def test_load_osdface_lora_from_the_registry_folder(batch, tmp_path, monkeypatch, randomize_lora):
    lq, p = batch
    src = make_generator(encode_mode="mode")
    randomize_lora(src, seed=11)
    folder = tmp_path / "osdface"  # the `osdface_lora` entry's place under $HONESTFACE_HOME
    folder.mkdir()
    save_file({f"unet.{k}": v for k, v in src.lora_state_dict().items()},
              str(folder / "pytorch_lora_weights.safetensors"))
    torch.save({}, folder / "embedding_change_weights.pth")
    monkeypatch.setenv("HONESTFACE_HOME", str(tmp_path))
    dst = make_generator(encode_mode="mode", lora_rank=0)
    dst.load_osdface_lora()
    assert dst.lora_rank == 16 and dst.lora_alpha == 16.0
    with torch.no_grad():
        assert torch.equal(dst(lq, p)[0], src(lq, p)[0])
