"""Latent discriminator of HonestFace: a frozen SD UNet encoder reading noised latents, with a small trainable head.

Paper component: the "Discriminator" of the HonestFace pipeline figure (arXiv 2505.18469), which scores the one-step
estimate `z_hat_H` (fake) against the ground-truth latent `z_H` (real), conditioned on the prompt `p`, and is trained
alternately with the generator ("adversarial distillation"). The paper does not describe its architecture
(docs/architecture.md). We follow DMD2 (Yin et al., "Improved Distribution Matching Distillation
for Fast Image Synthesis", NeurIPS 2024), whose helpers the authors' OSDFace code carries:

- the backbone is the diffusion UNet's encoder half (conv_in, time embedding, down blocks, mid block), here a
  *frozen copy* of the generator's base UNet (before its LoRA), optionally with its own LoRA;
- it reads *noised* latents `x_t = sqrt(abar_t) z + sqrt(1 - abar_t) n` at a random timestep per sample and
  cross-attends to `p`;
- the head on the mid-block features is Conv4x4/s2 -> GroupNorm -> SiLU -> Conv4x4/s4 -> GroupNorm -> SiLU ->
  Conv1x1 -> one logit (DMD2's classifier branch on 1280 x 8 x 8 features at 512 px).

Our choices: the timestep range (default [20, 980], DMD2's 0.02..0.98 of 1000 steps), an adaptive average pool to
4x4 between the two 4x4 convs so any latent size works (tiny models have 16x16 or smaller mid features; inputs
smaller than 4x4 are nearest-upsampled first), the head width (default: the mid-block width) and the option to
score clean latents (`add_noise=False`). Losses (softplus non-saturating, R1) live in `honestface.losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from torch import nn

from honestface.models.generator import scheduler_alphas_cumprod

__all__ = ["DiscriminatorHead", "LatentDiscriminator", "canonical_unet_key"]

DISC_LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


def canonical_unet_key(name: str) -> str | None:
    """A UNet parameter name without peft wrapping (`x.base_layer.weight` -> `x.weight`); None for LoRA tensors."""
    if ".lora_" in name or "lora_magnitude" in name:
        return None
    return name.replace(".base_layer.", ".")


def _groups(channels: int, wanted: int) -> int:
    g = min(wanted, channels)
    while channels % g:
        g -= 1
    return g


class DiscriminatorHead(nn.Module):
    """(B, C, h, w) features -> (B,) logits: Conv4x4/s2 -> GN -> SiLU -> pool 4x4 -> Conv4x4/s4 -> GN -> SiLU -> 1x1."""

    def __init__(self, in_channels: int, channels: int, norm_groups: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 4, stride=2, padding=1)
        self.norm1 = nn.GroupNorm(_groups(channels, norm_groups), channels)
        self.conv2 = nn.Conv2d(channels, channels, 4, stride=4, padding=0)
        self.norm2 = nn.GroupNorm(_groups(channels, norm_groups), channels)
        self.out = nn.Conv2d(channels, 1, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if min(h.shape[-2:]) < 4:
            h = F.interpolate(h, size=(max(h.shape[-2], 4), max(h.shape[-1], 4)), mode="nearest")
        h = F.silu(self.norm1(self.conv1(h)))  # (B, C', h/2, w/2)
        h = F.adaptive_avg_pool2d(h, 4)  # (B, C', 4, 4); the identity at SD size (8x8 mid -> 4x4)
        h = F.silu(self.norm2(self.conv2(h)))  # (B, C', 1, 1)
        return self.out(h).flatten(1).squeeze(1)  # (B,)


class LatentDiscriminator(ModelMixin, ConfigMixin):
    """DMD2-style latent discriminator conditioned on the prompt embedding.

    Args:
        unet_config: the generator UNet's diffusers config (its encoder half and mid block are rebuilt here).
        scheduler_config: the diffusers scheduler config giving `alphas_cumprod` (None: SD 2.1-base betas).
        head_channels: head width (None: the mid-block width). head_norm_groups: GroupNorm groups of the head.
        t_min, t_max: inclusive range of the random timestep. add_noise: noise the input (False scores z as is).
        lora_rank, lora_alpha, lora_target_modules: optional LoRA on the frozen backbone (0 = none).
    """

    @register_to_config
    def __init__(self, unet_config: dict[str, Any], scheduler_config: dict[str, Any] | None = None,
                 head_channels: int | None = None, head_norm_groups: int = 32, t_min: int = 20, t_max: int = 980,
                 add_noise: bool = True, lora_rank: int = 0, lora_alpha: float | None = None,
                 lora_target_modules: Sequence[str] = DISC_LORA_TARGETS) -> None:
        super().__init__()
        alphas = scheduler_alphas_cumprod(scheduler_config)
        if not 0 <= t_min <= t_max < len(alphas):
            raise ValueError(f"need 0 <= t_min <= t_max < {len(alphas)}, got t_min={t_min}, t_max={t_max}")
        self.alphas_cumprod = alphas  # float64 on CPU, not a buffer (kept out of dtype casts and checkpoints)
        backbone = UNet2DConditionModel.from_config({k: v for k, v in unet_config.items() if not k.startswith("_")})
        backbone.up_blocks = nn.ModuleList()  # only conv_in, time embedding, down blocks and mid block are used
        backbone.conv_norm_out, backbone.conv_act, backbone.conv_out = None, None, None
        if backbone.mid_block is None:
            raise ValueError("the discriminator needs a UNet config with a mid block (mid_block_type is None)")
        self.backbone = backbone.requires_grad_(False)
        mid_channels = int(backbone.config.block_out_channels[-1])
        self.head = DiscriminatorHead(mid_channels, head_channels or mid_channels, head_norm_groups)
        if lora_rank > 0:
            from peft import LoraConfig

            self.backbone.add_adapter(LoraConfig(r=lora_rank, lora_alpha=float(lora_alpha or lora_rank),
                                                 init_lora_weights="gaussian",
                                                 target_modules=list(lora_target_modules)))

    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, scheduler_config: dict[str, Any] | None = None,
                  **kwargs: Any) -> LatentDiscriminator:
        """Build from the generator's UNet and copy its base weights (LoRA tensors are skipped, so copy before
        merging a LoRA). Extra keyword arguments go to the constructor."""
        disc = cls(dict(unet.config), scheduler_config, **kwargs)
        disc.load_backbone_weights(unet.state_dict())
        if unet.dtype != disc.dtype:
            disc = disc.to(dtype=unet.dtype)
        return disc.to(unet.device)

    def load_backbone_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy the encoder half + mid block from a UNet state dict (plain or peft-wrapped)."""
        source = {c: v for k, v in state_dict.items() if (c := canonical_unet_key(k)) is not None}
        with torch.no_grad():
            for name, tensor in list(self.backbone.named_parameters()) + list(self.backbone.named_buffers()):
                key = canonical_unet_key(name)
                if key is None:
                    continue
                if key not in source:
                    raise ValueError(f"UNet state dict has no {key!r} for the discriminator backbone")
                if source[key].shape != tensor.shape:
                    raise ValueError(f"shape mismatch for {key!r}: {tuple(source[key].shape)} vs {tuple(tensor.shape)}")
                tensor.copy_(source[key])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The head and the backbone LoRA (the rest is a copy of the base UNet)."""
        return {n: p.detach() for n, p in self.named_parameters() if n.startswith("head.") or ".lora_" in n}

    def sample_timesteps(self, batch_size: int, device: torch.device,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        gen_device = generator.device if generator is not None else device
        t = torch.randint(self.config.t_min, self.config.t_max + 1, (batch_size,), generator=generator,
                          device=gen_device)
        return t.to(device)

    def noise(self, z: torch.Tensor, timesteps: torch.Tensor, generator: torch.Generator | None = None,
              noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) z + sqrt(1 - abar_t) n, with n ~ N(0, I) from `generator` unless given."""
        if noise is None:
            gen_device = generator.device if generator is not None else z.device
            noise = torch.randn(z.shape, generator=generator, device=gen_device, dtype=z.dtype).to(z.device)
        a = self.alphas_cumprod[timesteps.cpu()].to(device=z.device, dtype=torch.float32).view(-1, 1, 1, 1)
        return (a.sqrt() * z.float() + (1 - a).sqrt() * noise.float()).to(z.dtype)

    def features(self, x_t: torch.Tensor, timesteps: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Mid-block features (B, C_mid, h/2^(n-1), w/2^(n-1)) of the backbone for inputs x_t at `timesteps`."""
        bb = self.backbone
        dtype = next(bb.parameters()).dtype
        emb = bb.time_embedding(bb.time_proj(timesteps).to(dtype))  # (B, time_embed_dim)
        ctx = prompt_embeds.to(dtype)
        h = bb.conv_in(x_t.to(dtype))
        for block in bb.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=ctx)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        if getattr(bb.mid_block, "has_cross_attention", False):
            return bb.mid_block(h, emb, encoder_hidden_states=ctx)
        return bb.mid_block(h, emb)

    def forward(self, z: torch.Tensor, prompt_embeds: torch.Tensor, timesteps: torch.Tensor | int | None = None,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, 4, h, w) latents (real z_H or fake z_hat), p (B, L, dim) -> logits (B,) (higher = real).

        `timesteps` (B,) or int: None draws one per sample in [t_min, t_max] from `generator`.
        """
        if z.ndim != 4 or prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != z.shape[0]:
            raise ValueError(f"expected z (B, C, h, w) and prompt_embeds (B, L, D), got {tuple(z.shape)} and "
                             f"{tuple(prompt_embeds.shape)}")
        b = z.shape[0]
        if timesteps is None:
            timesteps = self.sample_timesteps(b, z.device, generator) if self.config.add_noise else 0
        timesteps = torch.as_tensor(timesteps, device=z.device, dtype=torch.long).expand(b).contiguous()
        x_t = self.noise(z, timesteps, generator, noise) if self.config.add_noise else z
        return self.head(self.features(x_t, timesteps, prompt_embeds)).to(z.dtype)  # (B,)
