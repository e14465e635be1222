"""Latent discriminator: shapes at any latent size, frozen backbone copied from the UNet, gradients reach only the
head (and the generator through z_hat), seeded timestep/noise sampling, optional LoRA, save/load."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel

from honestface.models.discriminator import LatentDiscriminator
from honestface.models.generator import OneStepGenerator
from honestface.models.presets import SD21_SCHEDULER_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel.from_config(TINY_UNET_CONFIG).eval()


@pytest.fixture(scope="module")
def disc(unet) -> LatentDiscriminator:
    torch.manual_seed(1)
    return LatentDiscriminator.from_unet(unet, SD21_SCHEDULER_CONFIG).eval()


def ctx(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 7, 32, generator=torch.Generator().manual_seed(2))


def test_backbone_is_a_frozen_copy_of_the_unet(unet, disc):
    own = dict(disc.backbone.named_parameters())
    for name, p in unet.named_parameters():
        if name.startswith(("conv_in.", "time_embedding.", "down_blocks.", "mid_block.")):
            assert torch.equal(own[name], p) and own[name].data_ptr() != p.data_ptr(), name
    assert not any(k.startswith(("up_blocks.", "conv_out.")) for k in own)
    assert {n for n, p in disc.named_parameters() if p.requires_grad} == {f"head.{n}" for n, _ in
                                                                        disc.head.named_parameters()}


@pytest.mark.parametrize("size", [32, 8, 4, 2])
def test_logits_shape_at_any_latent_size(disc, size):
    z = torch.randn(3, 4, size, size)
    with torch.no_grad():
        logits = disc(z, ctx(3), generator=torch.Generator().manual_seed(0))
    assert logits.shape == (3,) and torch.isfinite(logits).all()


def test_seeded_sampling_and_explicit_timesteps(disc):
    z, p = torch.randn(2, 4, 32, 32), ctx()
    with torch.no_grad():
        a = disc(z, p, generator=torch.Generator().manual_seed(5))
        b = disc(z, p, generator=torch.Generator().manual_seed(5))
        c = disc(z, p, generator=torch.Generator().manual_seed(6))
        t = disc.sample_timesteps(100, z.device, torch.Generator().manual_seed(0))
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(9))
        fixed = disc(z, p, timesteps=torch.tensor([100, 700]), noise=noise)
        manual = disc.head(disc.features(disc.noise(z, torch.tensor([100, 700]), noise=noise),
                                         torch.tensor([100, 700]), p))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert t.min() >= 20 and t.max() <= 980 and len(t.unique()) > 10
    torch.testing.assert_close(fixed, manual)
    abar = disc.alphas_cumprod[700].item()
    torch.testing.assert_close(disc.noise(z, torch.tensor([700, 700]), noise=noise),
                               abar**0.5 * z + (1 - abar) ** 0.5 * noise)


def test_gradients_reach_only_the_head_and_the_input(disc):
    z = torch.randn(2, 4, 32, 32, requires_grad=True)
    p = ctx().requires_grad_(True)
    disc.zero_grad()
    disc(z, p, generator=torch.Generator().manual_seed(0)).sum().backward()
    with_grad = {n for n, q in disc.named_parameters() if q.grad is not None and q.grad.abs().sum() > 0}
    assert with_grad == {f"head.{n}" for n, _ in disc.head.named_parameters()}
    assert z.grad.abs().sum() > 0 and p.grad.abs().sum() > 0  # conditioned on p, differentiable w.r.t. z
    disc.zero_grad()


def test_generator_gets_gradients_through_z_hat(unet):
    torch.manual_seed(0)
    gen = OneStepGenerator.from_configs(TINY_UNET_CONFIG, TINY_VAE_CONFIG, SD21_SCHEDULER_CONFIG, encode_mode="mode")
    disc = LatentDiscriminator.from_unet(gen.unet, gen.scheduler_config)
    with torch.no_grad():
        for name, q in gen.lora_named_parameters():
            if "lora_B" in name:
                q.normal_(std=0.01)
    lq, p = torch.rand(2, 3, 64, 64) * 2 - 1, ctx()
    _, z_hat, _, _ = gen(lq, p)
    loss = torch.nn.functional.softplus(-disc(z_hat, p, generator=torch.Generator().manual_seed(0))).mean()
    loss.backward()
    lora = gen.lora_named_parameters()
    assert lora and all(q.grad is not None and q.grad.abs().sum() > 0 for _, q in lora)
    assert all(q.grad is None for n, q in disc.named_parameters() if n.startswith("backbone."))
    assert all(q.grad is None for q in gen.vae.parameters())


def test_lora_option_and_clean_scoring(unet):
    d = LatentDiscriminator.from_unet(unet, SD21_SCHEDULER_CONFIG, lora_rank=4, add_noise=False).eval()
    trainable = {n for n, q in d.named_parameters() if q.requires_grad}
    assert any(".lora_A" in n for n in trainable) and all(n.startswith("head.") or ".lora_" in n for n in trainable)
    assert set(d.trainable_state_dict()) == trainable
    z = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(d(z, ctx(), generator=torch.Generator().manual_seed(0)),
                           d(z, ctx(), generator=torch.Generator().manual_seed(1)))  # no noise: seed irrelevant


def test_save_load_round_trip(disc, tmp_path):
    disc.save_pretrained(tmp_path)
    loaded = LatentDiscriminator.from_pretrained(tmp_path).eval()
    z = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        a = disc(z, ctx(), generator=torch.Generator().manual_seed(3))
        b = loaded(z, ctx(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_errors(unet, disc):
    with pytest.raises(ValueError, match="t_min"):
        LatentDiscriminator(dict(unet.config), t_min=500, t_max=100)
    with pytest.raises(ValueError, match="prompt_embeds"):
        disc(torch.randn(2, 4, 8, 8), torch.randn(3, 7, 32))
    with pytest.raises(ValueError, match="conv_in.weight"):
        disc.load_backbone_weights({})
