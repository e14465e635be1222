"""HonestFace composite (tiny preset): shapes at every boundary, references (K = 0, 1, 3, masks, dropout, cached
features), gradients on exactly the trainable parameters, discriminator wiring, LoRA merge, save/load round trip,
OSDFace-compatible mode; a slow SD 2.1-size forward."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import torch

from honestface.models import HonestFace
from honestface.weights import MissingWeightError

FALLBACK = ("face_identity_encoder.null", "face_identity_encoder.lq_to_fallback.")


@pytest.fixture(scope="module")
def model(randomize_lora) -> HonestFace:
    m = HonestFace.from_preset("tiny", encode_mode="mode")
    randomize_lora(m)
    return m


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"lq": torch.rand(2, 3, 64, 64, generator=g) * 2 - 1,
            "refs": torch.rand(2, 3, 3, 64, 64, generator=g) * 2 - 1,
            "mask": torch.tensor([[True, True, False], [True, False, False]])}


def test_shapes_at_every_boundary(model, data):
    with torch.no_grad():
        out = model(data["lq"], data["refs"], data["mask"])
    assert out.z_lq.shape == out.z_hat.shape == out.eps.shape == (2, 4, 32, 32)
    assert out.x_hat.shape == (2, 3, 64, 64)
    assert out.p_L.shape == (2, 8, 32) and out.p_F.shape == (2, 2, 32) and out.p_I.shape == (2, 4, 32)
    assert out.prompt_embeds.shape == (2, 8 + 2 + 4, 32)
    for value in out.values():
        assert torch.isfinite(value).all()
    assert out.x_hat.abs().max() <= 1
    feats = model.encode_references(data["refs"], data["mask"])
    assert feats.embeddings.shape == (2, 3, 16) and feats.tokens.shape == (2, 3, 17, 32)
    assert torch.all(feats.embeddings[~data["mask"]] == 0)  # padded references are not run


def test_precomputed_and_broadcast_references(model, data):
    lq, refs, mask = data["lq"], data["refs"], data["mask"]
    with torch.no_grad():
        direct = model(lq, refs, mask).x_hat
        feats = model.encode_references(refs, mask)
        cached = model(lq, ref_mask=feats.mask, ref_embeddings=feats.embeddings, ref_tokens=feats.tokens).x_hat
        one = model.encode_references(refs[:1], mask[:1])  # one identity for the whole batch
        broadcast = model(lq, ref_mask=one.mask, ref_embeddings=one.embeddings, ref_tokens=one.tokens).x_hat
        first_only = model(lq[:1], refs[:1], mask[:1]).prompt_embeds
        broadcast_p = model.prompt_embeds(lq, ref_mask=one.mask, ref_embeddings=one.embeddings,
                                          ref_tokens=one.tokens)[0]
    assert torch.equal(direct, cached) and broadcast.shape == direct.shape
    torch.testing.assert_close(broadcast_p[:1], first_only, atol=1e-5, rtol=0)  # batch size changes the rounding


@pytest.mark.parametrize("k", [0, 1, 3])
def test_variable_number_of_references(model, data, k):
    with torch.no_grad():
        out = model(data["lq"], data["refs"][:, :k])
        blind = model(data["lq"])
    assert out.x_hat.shape == (2, 3, 64, 64) and torch.isfinite(out.x_hat).all()
    if k == 0:  # blind: the fusion's null identity tokens, same as no refs at all
        assert torch.equal(out.prompt_embeds, blind.prompt_embeds) and out.p_F is None
    else:
        assert not torch.allclose(out.prompt_embeds, blind.prompt_embeds)


def test_drop_refs_and_fully_masked_rows_equal_blind(model, data):
    lq, refs, mask = data["lq"], data["refs"], data["mask"]
    with torch.no_grad():
        full = model(lq, refs, mask).prompt_embeds
        blind = model(lq).prompt_embeds
        dropped = model(lq, refs, mask, drop_refs=torch.tensor([False, True])).prompt_embeds
        masked = model(lq, refs, torch.tensor([[True, True, False], [False, False, False]])).prompt_embeds
    assert torch.equal(dropped[1], blind[1]) and torch.equal(masked[1], blind[1])  # exactly the null tokens
    torch.testing.assert_close(dropped[0], full[0], atol=1e-5, rtol=0)  # (other rows: batch rounding only)
    torch.testing.assert_close(masked[0], full[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="drop_refs"):
        model(lq, refs, mask, drop_refs=torch.tensor([1, 0]))


def _grad_names(model: HonestFace) -> set[str]:
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_gradients_on_exactly_the_trainable_parameters_lq_mode(data, randomize_lora):
    m = HonestFace.from_preset("tiny", encode_mode="mode", fusion={"blind_mode": "lq"}).train()
    randomize_lora(m)
    out = m(data["lq"], data["refs"], torch.tensor([[True, True, False], [False, False, False]]))
    (out.x_hat.square().mean() + out.x_hat.mean()).backward()
    names = set(m.trainable_parameter_names())
    assert _grad_names(m) == names
    assert {n.split(".")[0] for n in names} == {"generator", "vre", "face_identity_encoder",
                                                 "facial_feature_extractor", "fusion"}
    assert all(".lora_" in n for n in names if n.startswith("generator."))
    assert all(n.startswith("vre.projection.") for n in names if n.startswith("vre."))
    assert {n for n, p in m.named_parameters() if p.requires_grad and not n.startswith("discriminator.")} == names
    assert sum(p.numel() for p in m.trainable_parameters()) == sum(
        p.numel() for n, p in m.named_parameters() if n in names)


def test_gradients_null_mode_with_reference_dropout(model, data):
    model.zero_grad()
    out = model(data["lq"], data["refs"], data["mask"], drop_refs=torch.tensor([False, True]))
    out.x_hat.mean().backward()
    assert not any(n.startswith(FALLBACK) for n in model.trainable_parameter_names())  # unused in "null" mode
    assert _grad_names(model) == set(model.trainable_parameter_names())
    model.zero_grad()


def test_discriminator_wiring(model, data):
    model.zero_grad()
    out = model(data["lq"], data["refs"], data["mask"])
    z_real = model.encode_latents(data["lq"])
    d = model.discriminator
    g = torch.Generator().manual_seed(0)
    loss_g = torch.nn.functional.softplus(-d(out.z_hat, out.prompt_embeds, generator=g)).mean()
    loss_g.backward()
    assert {n for n in _grad_names(model) if not n.startswith("discriminator.")} <= set(
        model.trainable_parameter_names())
    assert any(n.startswith("generator.") for n in _grad_names(model))
    model.zero_grad()
    loss_d = (torch.nn.functional.softplus(d(out.z_hat.detach(), out.prompt_embeds.detach(), generator=g))
              + torch.nn.functional.softplus(-d(z_real, out.prompt_embeds.detach(), generator=g))).mean()
    loss_d.backward()
    assert _grad_names(model) == {f"discriminator.head.{n}" for n, _ in d.head.named_parameters()}
    assert {id(p) for p in model.discriminator_parameters()} == {id(p) for p in d.head.parameters()}
    assert not set(model.trainable_parameter_names()) & {f"discriminator.{n}" for n, _ in d.named_parameters()}
    model.zero_grad()


def test_merged_lora_matches(model, data):
    merged = copy.deepcopy(model)
    merged.merge_lora()
    with torch.no_grad():
        a = model(data["lq"], data["refs"], data["mask"]).x_hat
        b = merged(data["lq"], data["refs"], data["mask"]).x_hat
    assert (a - b).abs().max() < 1e-5
    with pytest.raises(ValueError, match="merged"):
        merged.save_pretrained("unused")


def test_save_load_round_trip_is_bit_exact(model, data, tmp_path):
    with torch.no_grad():
        model.fusion.null_id.add_(0.5)  # trained-looking values
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["frozen.safetensors", "honestface_config.json", "honestface_modules.safetensors",
                     "pytorch_lora_weights.safetensors"]
    cfg = json.loads((tmp_path / "honestface_config.json").read_text())
    assert cfg["use_ide"] and cfg["fusion"]["dim"] == 32 and cfg["generator"]["timestep"] == 399
    loaded = HonestFace.from_pretrained(tmp_path)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    with torch.no_grad():
        a = model(data["lq"], data["refs"], data["mask"], drop_refs=torch.tensor([False, True]))
        b = loaded(data["lq"], data["refs"], data["mask"], drop_refs=torch.tensor([False, True]))
        assert torch.equal(model.discriminator(a.z_hat, a.prompt_embeds, generator=g1),
                           loaded.discriminator(b.z_hat, b.prompt_embeds, generator=g2))
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.prompt_embeds, b.prompt_embeds)
    assert loaded.trainable_parameter_names() == model.trainable_parameter_names()
    assert HonestFace.from_pretrained(tmp_path, with_discriminator=False).discriminator is None
    with pytest.raises(ValueError, match="not a frozen part"):
        HonestFace.from_pretrained(tmp_path, sd21_base="/nowhere")
    with pytest.raises(FileNotFoundError, match="honestface_config.json"):
        HonestFace.from_pretrained(tmp_path / "missing")


def test_osdface_compatible_mode(data, tmp_path):
    m = HonestFace.from_preset("tiny", use_ide=False, with_discriminator=False, encode_mode="mode")
    with torch.no_grad():
        out = m(data["lq"])
    assert torch.equal(out.prompt_embeds, out.p_L) and out.p_F is None and m.fusion is None
    assert {n.split(".")[0] for n in m.trainable_parameter_names()} == {"generator", "vre"}
    with pytest.raises(ValueError, match="use_ide=False"):
        m(data["lq"], data["refs"])
    m.save_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(HonestFace.from_pretrained(tmp_path)(data["lq"]).x_hat, out.x_hat)


def test_train_mode_keeps_frozen_parts_in_eval(model):
    model.train()
    assert model.generator.unet.training and model.fusion.training
    assert not model.generator.vae.training and not model.vre.encoder.training
    assert not model.identity_backbone.net.training and not model.image_backbone.model.training
    model.eval()


def test_configuration_errors(model, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown HonestFace preset"):
        HonestFace.from_preset("sdxl")
    with pytest.raises(ValueError, match="lora_rnk"):
        HonestFace.from_preset("tiny", lora_rnk=4)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        HonestFace(model.generator, model.vre, model.face_identity_encoder, model.facial_feature_extractor,
                   type(model.fusion)(dim=16, num_vre_tokens=8, num_id_tokens=2, num_feature_tokens=4),
                   model.identity_backbone, model.image_backbone)
    with pytest.raises(ValueError, match="all of"):
        HonestFace(model.generator, model.vre, model.face_identity_encoder)
    monkeypatch.setenv("HONESTFACE_HOME", str(tmp_path))
    with pytest.raises(MissingWeightError, match="sd21_base"):
        HonestFace.from_preset("sd21")


def test_config_params_build_the_model():
    from honestface.config import config_to_dict, load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny" / "honestface.yaml")
    m = HonestFace.from_preset(cfg.model.preset, with_discriminator=False, **config_to_dict(cfg.model.params))
    assert m.use_ide and m.generator.lora_rank == 16 and m.generator.timestep == 100  # the small-scale choices
    assert m.generator.encode_mode == "mode" and m.generator.train_base


def test_sd21_preset_architecture_on_meta_device():
    with torch.device("meta"):
        m = HonestFace.from_preset("sd21", pretrained=False)
    assert m.fusion.num_tokens == 97 and m.generator.unet.config.cross_attention_dim == 1024
    assert m.vre.config.num_tokens == 77 and m.vre.config.input_transform == "osdface"
    assert sum(p.numel() for n, p in m.generator.unet.named_parameters() if ".lora_" not in n) == 865_910_724
    assert m.image_backbone.num_tokens == 257 and m.identity_backbone.id_dim == 512
    with pytest.raises(ValueError, match="unknown part 'unet'"):
        HonestFace.from_preset("sd21", pretrained=["unet"])


@pytest.mark.slow
def test_sd21_size_forward_from_a_diffusers_folder(tmp_path):
    """SD 2.1-base-size UNet + VAE with random weights, saved as a diffusers folder, then the full HonestFace (random
    OSDFace-size VRE, iResNet-50, CLIP ViT-H/14) loaded from it; one 512x512 forward on CPU."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from honestface.models.presets import SD21_SCHEDULER_CONFIG, SD21_UNET_CONFIG, SD21_VAE_CONFIG

    torch.manual_seed(0)
    UNet2DConditionModel.from_config(SD21_UNET_CONFIG).save_pretrained(tmp_path / "sd" / "unet")
    AutoencoderKL.from_config(SD21_VAE_CONFIG).save_pretrained(tmp_path / "sd" / "vae")
    DDIMScheduler.from_config(SD21_SCHEDULER_CONFIG).save_pretrained(tmp_path / "sd" / "scheduler")
    model = HonestFace.from_preset("sd21", pretrained=["generator"], weights={"sd21_base": str(tmp_path / "sd")},
                                   encode_mode="mode")
    assert model.sources == {"generator": {"weights": "sd21_base", "path": str(tmp_path / "sd")}}
    lq, refs = torch.rand(1, 3, 512, 512) * 2 - 1, torch.rand(1, 2, 3, 512, 512) * 2 - 1
    start = time.perf_counter()
    with torch.no_grad():
        out = model(lq, refs)
        seconds = time.perf_counter() - start
        logits = model.discriminator(out.z_hat, out.prompt_embeds, generator=torch.Generator().manual_seed(0))
    assert out.x_hat.shape == (1, 3, 512, 512) and out.z_hat.shape == (1, 4, 64, 64)
    assert out.prompt_embeds.shape == (1, 77 + 4 + 16, 1024) and torch.isfinite(out.x_hat).all()
    assert logits.shape == (1,) and torch.isfinite(logits).all()
    print(f"SD 2.1-size HonestFace forward (512x512, K=2, CPU): {seconds:.1f} s")


def test_trained_vae_and_vre_folders_replace_the_random_ones(tmp_path):
    """The small-scale recipe: the `vae` and `vre` stages export folders the tiny HonestFace is built on."""
    from diffusers import AutoencoderKL

    from honestface.models.presets import TINY_VAE_CONFIG
    from honestface.models.vre import VisualRepresentationEmbedder

    torch.manual_seed(3)
    vae = AutoencoderKL(**TINY_VAE_CONFIG)
    vae.save_pretrained(tmp_path / "vae")
    vre = VisualRepresentationEmbedder.from_preset("tiny", out_dim=32)
    vre.save_pretrained(tmp_path / "vre")
    model = HonestFace.from_preset("tiny", vae_path=str(tmp_path / "vae"), vre_path=str(tmp_path / "vre"))
    assert torch.equal(model.vae.encoder.conv_in.weight, vae.encoder.conv_in.weight)
    assert torch.equal(model.vre.codebook, vre.codebook)
    assert not any(p.requires_grad for p in model.vae.parameters())
    assert not any(n.startswith(("vre.encoder", "vre.quantize")) for n in model.trainable_parameter_names())
    model.save_pretrained(tmp_path / "model")
    again = HonestFace.from_pretrained(tmp_path / "model")
    assert torch.equal(again.vae.encoder.conv_in.weight, vae.encoder.conv_in.weight)
    assert torch.equal(again.vre.codebook, vre.codebook)


def test_train_base_trains_and_saves_the_whole_unet(data, tmp_path, randomize_lora):
    """Small-scale recipe option: the random base UNet trains with its LoRA, and the trained base is saved."""
    m = HonestFace.from_preset("tiny", encode_mode="mode", train_base=True).train()
    randomize_lora(m)
    names = set(m.trainable_parameter_names())
    unet = {f"generator.unet.{n}" for n, _ in m.generator.unet.named_parameters()}
    assert unet <= names  # base weights and LoRA
    assert any(".lora_" in n for n in unet) and any(".base_layer." in n for n in unet)
    out = m(data["lq"], data["refs"], data["mask"])
    out.x_hat.square().mean().backward()
    assert unet <= _grad_names(m) <= names  # every UNet weight learns; nothing outside the trainable set
    with torch.no_grad():
        next(p for n, p in m.generator.unet.named_parameters() if ".base_layer." in n).add_(0.01)  # "trained"
    m.eval().save_pretrained(tmp_path)
    loaded = HonestFace.from_pretrained(tmp_path)
    assert loaded.generator.train_base and set(loaded.trainable_parameter_names()) == names
    with torch.no_grad():
        a, b = m(data["lq"], data["refs"], data["mask"]), loaded(data["lq"], data["refs"], data["mask"])
    assert torch.equal(a.x_hat, b.x_hat)
