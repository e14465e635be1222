"""Feature Fusion of HonestFace: [p_L; p_F; p_I] -> the UNet's cross-attention context p.

Paper component: the "Feature Fusion" block of HonestFace (Wang et al., arXiv 2505.18469, pipeline figure), which
takes the VRE prompt p_L and the Identity Embedder's p_F and p_I and gives the prompt embedding p that the UNet
(and the latent discriminator) attend to. The operator and the token count are not public; this is **our design**
(docs/architecture.md): token concatenation, one learned segment embedding added to each
segment's tokens (so cross-attention can tell the sources apart), and a final LayerNorm. At SD 2.1 sizes
p is (B, 77 + 4 + 16 = 97, 1024).

Blind use (no references) keeps the token count fixed, so blind and reference samples batch together:
- `blind_mode="null"`: when p_F / p_I is None, or `drop[b]` is True, sample b's identity tokens are replaced by
  learned null tokens (classifier-free-guidance-style reference dropout, decided by the trainer through `drop`,
  e.g. from `sample_reference_dropout`).
- `blind_mode="lq"`: the caller computes p_F / p_I from the LQ face alone (the IDE components with no valid
  reference, e.g. after `drop_references`) and passes them; nothing is replaced and `drop` is ignored.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

BLIND_MODES = ("null", "lq")

FUSION_PRESETS: dict[str, dict[str, Any]] = {
    "sd21": {"dim": 1024, "num_vre_tokens": 77, "num_id_tokens": 4, "num_feature_tokens": 16, "blind_mode": "null"},
    "tiny": {"dim": 32, "num_vre_tokens": 8, "num_id_tokens": 2, "num_feature_tokens": 4, "blind_mode": "null"},
}


def sample_reference_dropout(
    batch_size: int,
    p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B,) bool: True where a sample's references are dropped, each independently with probability `p`.

    `device` defaults to the generator's device (CPU without a generator).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"reference dropout probability must be in [0, 1], got {p}")
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    if device is None:
        device = generator.device if generator is not None else "cpu"
    return torch.rand(batch_size, generator=generator, device=device) < p


def drop_references(ref_mask: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
    """Apply a (B,) drop decision to a (B, K) reference mask: dropped samples keep no reference."""
    if drop is None:
        return ref_mask
    if drop.dtype != torch.bool or drop.ndim != 1 or drop.shape[0] != ref_mask.shape[0]:
        raise ValueError(f"drop must be a (B={ref_mask.shape[0]},) bool tensor, got {drop.dtype} {tuple(drop.shape)}")
    return ref_mask & ~drop.to(ref_mask.device)[:, None]


class FeatureFusion(ModelMixin, ConfigMixin):
    """Concatenate p_L, p_F, p_I with segment embeddings and a final LayerNorm into (B, N_L + N_F + N_I, dim).

    Args:
        dim: token width (1024 for SD 2.1).
        num_vre_tokens: N_L, tokens of p_L (77 from the VRE).
        num_id_tokens: N_F, tokens of p_F (0 turns the segment off, for ablations).
        num_feature_tokens: N_I, tokens of p_I (0 turns the segment off).
        blind_mode: "null" (learned null tokens for missing / dropped identity) or "lq" (see module notes).
        final_norm: apply the final LayerNorm (our default: True).
    """

    @register_to_config
    def __init__(
        self,
        dim: int = 1024,
        num_vre_tokens: int = 77,
        num_id_tokens: int = 4,
        num_feature_tokens: int = 16,
        blind_mode: str = "null",
        final_norm: bool = True,
    ):
        super().__init__()
        if blind_mode not in BLIND_MODES:
            raise ValueError(f"unknown blind_mode {blind_mode!r}; allowed: {', '.join(BLIND_MODES)}")
        if dim < 1 or num_vre_tokens < 1 or num_id_tokens < 0 or num_feature_tokens < 0:
            raise ValueError("FeatureFusion needs dim >= 1, num_vre_tokens >= 1 and non-negative identity token counts")
        self.segment_vre = nn.Parameter(torch.randn(dim) * 0.02)
        self.segment_id = nn.Parameter(torch.randn(dim) * 0.02) if num_id_tokens else None
        self.segment_feature = nn.Parameter(torch.randn(dim) * 0.02) if num_feature_tokens else None
        use_null = blind_mode == "null"
        self.null_id = nn.Parameter(torch.randn(num_id_tokens, dim) * 0.02) if use_null and num_id_tokens else None
        self.null_feature = (
            nn.Parameter(torch.randn(num_feature_tokens, dim) * 0.02) if use_null and num_feature_tokens else None
        )
        self.norm = nn.LayerNorm(dim) if final_norm else nn.Identity()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> FeatureFusion:
        """Build from `FUSION_PRESETS[name]` ("sd21" or "tiny"), with overrides."""
        if name not in FUSION_PRESETS:
            raise ValueError(f"unknown fusion preset {name!r}; allowed: {', '.join(FUSION_PRESETS)}")
        return cls(**{**FUSION_PRESETS[name], **overrides})

    @property
    def num_tokens(self) -> int:
        """Token count of the fused context p."""
        cfg = self.config
        return cfg.num_vre_tokens + cfg.num_id_tokens + cfg.num_feature_tokens

    def _segment(
        self,
        name: str,
        tokens: torch.Tensor | None,
        n: int,
        null: torch.Tensor | None,
        keep: torch.Tensor | None,
        like: torch.Tensor,
    ) -> torch.Tensor | None:
        """(B, n, dim) identity tokens of one segment after null replacement, or None when n = 0."""
        b, dim = like.shape[0], self.config.dim
        if n == 0:
            if tokens is not None and tokens.shape[1] != 0:
                raise ValueError(f"{name} has {tokens.shape[1]} tokens but the fusion was built with 0")
            return None
        if tokens is not None and tuple(tokens.shape) != (b, n, dim):
            raise ValueError(f"{name} must be (B={b}, {n}, {dim}), got {tuple(tokens.shape)}")
        if null is None:  # blind_mode "lq": the caller's tokens are used as they are
            if tokens is None:
                raise ValueError(f"blind_mode 'lq' needs {name} (computed from the LQ face when there is no reference)")
            return tokens.to(like.dtype)
        null = null.to(like.dtype).expand(b, -1, -1)
        if tokens is None:
            return null
        if keep is None:
            return tokens.to(like.dtype)
        return torch.where(keep[:, None, None], tokens.to(like.dtype), null)

    def forward(
        self,
        p_L: torch.Tensor,
        p_F: torch.Tensor | None = None,
        p_I: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """p_L (B, N_L, dim), p_F (B, N_F, dim) | None, p_I (B, N_I, dim) | None, drop (B,) bool -> p (B, N, dim)."""
        cfg = self.config
        if p_L.ndim != 3 or tuple(p_L.shape[1:]) != (cfg.num_vre_tokens, cfg.dim):
            raise ValueError(f"p_L must be (B, {cfg.num_vre_tokens}, {cfg.dim}), got {tuple(p_L.shape)}")
        b = p_L.shape[0]
        x = p_L.to(self.segment_vre.dtype)
        keep = None
        if drop is not None:
            if drop.dtype != torch.bool or tuple(drop.shape) != (b,):
                raise ValueError(f"drop must be a (B={b},) bool tensor, got {drop.dtype} {tuple(drop.shape)}")
            keep = ~drop.to(x.device)
        parts = [x + self.segment_vre]
        f = self._segment("p_F", p_F, cfg.num_id_tokens, self.null_id, keep, x)
        if f is not None:
            parts.append(f + self.segment_id)
        i = self._segment("p_I", p_I, cfg.num_feature_tokens, self.null_feature, keep, x)
        if i is not None:
            parts.append(i + self.segment_feature)
        return self.norm(torch.cat(parts, dim=1))  # (B, N_L + N_F + N_I, dim)
