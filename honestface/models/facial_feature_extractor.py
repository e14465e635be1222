"""Facial Feature Extractor of HonestFace's Identity Embedder: LQ and reference image tokens -> p_I tokens.

Paper component: the "Facial Feature Extractor" inside the Identity Embedder of HonestFace (Wang et al., arXiv
2505.18469, pipeline figure): it sees the reference pool **and** the LQ face and outputs p_I, fused with p_F and
the VRE prompt p_L. The paper's internals (its Fig. 2) are not public; everything here is **our design**:

- `ImageTokenBackbone` (frozen): a transformers `CLIPVisionModel`. Default: OpenCLIP ViT-H/14, the image encoder of
  IP-Adapter (h94/IP-Adapter `models/image_encoder`; registry entry `clip_vit_h14_vision`): 224 px, patch 14,
  1 + 16 x 16 = 257 tokens of width 1280. Preprocessing as CLIP's image processor for square faces: bicubic resize
  (antialiased) to the config's image size, then the OpenAI CLIP mean / std (OpenCLIP uses the same constants for
  its laion2B ViT-H/14). Output: the hidden state of layer `layer`; the default -2 (penultimate) is what
  IP-Adapter-plus feeds its Resampler (Ye et al., arXiv 2308.06721; `hidden_states[-2]` in the h94/IP-Adapter code).
- `FacialFeatureExtractor` (trainable): a perceiver-style resampler (Jaegle et al., arXiv 2103.03206; the
  IP-Adapter-plus Resampler uses 16 learned queries): learned queries first cross-attend to the LQ tokens, then to
  the concatenated tokens of all K references (a key padding mask built from the reference mask, T keys per
  reference), then a feed-forward; pre-LayerNorm residual blocks, `depth` times; an output projection and
  LayerNorm to `out_dim`. Rows without a real reference (K = 0, None, or fully masked) skip the reference
  attention exactly (zero update, see `ide.masked_attention`), so the same network serves blind restoration.
  Attending the LQ first, then the references, is our choice (it lets the queries look for what the LQ lacks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from honestface.models.ide import masked_attention, preset_kwargs, reference_mask

# OpenAI CLIP normalisation (also used by OpenCLIP ViT-H/14 laion2B and by IP-Adapter's CLIPImageProcessor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageTokenBackbone(nn.Module):
    """Frozen CLIP vision tower: images (N, 3, H, W) in [-1, 1] -> tokens (N, T, hidden), T = (S / patch)^2 + 1.

    Args:
        model: a transformers `CLIPVisionModel`; put in eval mode and frozen.
        layer: which hidden state to return (index into `hidden_states`, which has num_layers + 1 entries:
            0 = patch embeddings, -1 = last layer, -2 = penultimate, IP-Adapter-plus's choice).
        mean, std: per-channel normalisation of [0, 1] pixels.
    Runs under `torch.no_grad()` (nothing flows back into a frozen feature extractor of the conditioning).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: int = -2,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ):
        super().__init__()
        cfg = model.config
        n_states = cfg.num_hidden_layers + 1
        if not -n_states <= layer < n_states:
            raise ValueError(f"layer {layer} out of range for a {cfg.num_hidden_layers}-layer CLIP vision model")
        self.model = model.eval().requires_grad_(False)
        self.layer = int(layer)
        self.image_size = int(cfg.image_size)
        self.hidden_size = int(cfg.hidden_size)
        self.num_tokens = (cfg.image_size // cfg.patch_size) ** 2 + 1
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, layer: int = -2, torch_dtype: torch.dtype | None = None, **kwargs: Any
    ) -> ImageTokenBackbone:
        """Load a local transformers folder (CLIPVisionModel[WithProjection] or a full CLIPModel's config.json)."""
        from transformers import CLIPVisionModel

        folder = os.fspath(folder)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise FileNotFoundError(f"CLIP vision model folder not found or without config.json: {folder}")
        model = CLIPVisionModel.from_pretrained(folder, torch_dtype=torch_dtype, local_files_only=True)
        return cls(model, layer=layer, **kwargs)

    @classmethod
    def from_config(cls, config: dict[str, Any], layer: int = -2, **kwargs: Any) -> ImageTokenBackbone:
        """Random weights from a `CLIPVisionConfig` dict (e.g. `ide.TINY_CLIP_VISION_CONFIG` for tests)."""
        from transformers import CLIPVisionConfig, CLIPVisionModel

        return cls(CLIPVisionModel(CLIPVisionConfig(**config)), layer=layer, **kwargs)

    @classmethod
    def from_weights(
        cls, path: str | os.PathLike | None = None, name: str = "clip_vit_h14_vision", **kwargs: Any
    ) -> ImageTokenBackbone:
        """Load a registry folder (default `clip_vit_h14_vision`); `path` overrides the cache location."""
        from honestface.weights import resolve_weight

        return cls.from_pretrained(resolve_weight(name, path), **kwargs)

    def train(self, mode: bool = True) -> ImageTokenBackbone:
        super().train(mode)
        self.model.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> CLIP pixel values (N, 3, S, S); non-square input is centre-cropped first."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"ImageTokenBackbone expects images (N, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h != w:
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            images = images[..., top : top + s, left : left + s]
        x = (images.float() + 1) / 2  # [0, 1]
        if x.shape[-1] != self.image_size:
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images: (N, 3, H, W) in [-1, 1]
        dtype = next(self.model.parameters()).dtype
        pixels = self.preprocess(images).to(dtype)  # (N, 3, S, S)
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[self.layer]  # (N, T, hidden)

    def encode_references(self, refs: torch.Tensor, ref_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, 3, H, W) references -> (B, K, T, hidden); only real references run, padded ones are zero."""
        if refs.ndim != 5:
            raise ValueError(f"refs must be (B, K, 3, H, W), got {tuple(refs.shape)}")
        b, k = refs.shape[:2]
        mask = reference_mask(ref_mask, b, k, refs.device)
        dtype = next(self.model.parameters()).dtype
        out = refs.new_zeros(b, k, self.num_tokens, self.hidden_size, dtype=dtype)
        if mask.any():
            out[mask] = self(refs[mask])  # (N_valid, T, hidden)
        return out


class _CrossAttention(nn.Module):
    """Pre-norm multi-head cross-attention; keys may be padding-masked (fully masked rows give 0)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        # x: (B, Q, D) queries, context: (B, N, D), key_mask: (B, N) bool or None
        b, nq, dim = x.shape
        h, d = self.num_heads, dim // self.num_heads
        q = self.to_q(self.norm_q(x)).view(b, nq, h, d).transpose(1, 2)  # (B, H, Q, d)
        k, v = self.to_kv(self.norm_kv(context)).view(b, -1, 2, h, d).permute(2, 0, 3, 1, 4)  # (B, H, N, d) each
        out, has_key = masked_attention(q, k, v, key_mask)
        out = self.to_out(out.transpose(1, 2).reshape(b, nq, dim))  # (B, Q, D)
        return out * has_key[:, None, None].to(out.dtype)  # exact zero update where there is nothing to attend


class _ResamplerBlock(nn.Module):
    """Queries += attn(LQ tokens); queries += attn(reference tokens, masked); queries += FF."""

    def __init__(self, dim: int, num_heads: int, ff_mult: int):
        super().__init__()
        self.lq_attn = _CrossAttention(dim, num_heads)
        self.ref_attn = _CrossAttention(dim, num_heads)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim)
        )

    def forward(
        self, x: torch.Tensor, lq: torch.Tensor, refs: torch.Tensor | None, key_mask: torch.Tensor | None
    ) -> torch.Tensor:
        x = x + self.lq_attn(x, lq, None)
        if refs is not None:
            x = x + self.ref_attn(x, refs, key_mask)
        return x + self.ff(x)


class FacialFeatureExtractor(ModelMixin, ConfigMixin):
    """Trainable perceiver producing p_I from LQ tokens and the tokens of K references.

    Args:
        token_dim: width of the backbone tokens (1280 for ViT-H/14).
        num_queries: number of learned queries = output tokens N_I.
        out_dim: output token width (1024 for SD 2.1's cross-attention).
        depth: number of resampler blocks.
        num_heads: attention heads (must divide the working width).
        ff_mult: feed-forward expansion.
        hidden_dim: working width of the queries; None = out_dim.
    """

    @register_to_config
    def __init__(
        self,
        token_dim: int = 1280,
        num_queries: int = 16,
        out_dim: int = 1024,
        depth: int = 2,
        num_heads: int = 8,
        ff_mult: int = 4,
        hidden_dim: int | None = None,
    ):
        super().__init__()
        dim = hidden_dim or out_dim
        if min(token_dim, num_queries, out_dim, depth, num_heads, ff_mult, dim) < 1:
            raise ValueError("FacialFeatureExtractor sizes must be positive")
        if dim % num_heads:
            raise ValueError(f"working width {dim} is not divisible by num_heads {num_heads}")
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * dim**-0.5)
        self.lq_in = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, dim))
        self.ref_in = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, dim))
        self.blocks = nn.ModuleList(_ResamplerBlock(dim, num_heads, ff_mult) for _ in range(depth))
        self.proj_out = nn.Linear(dim, out_dim)
        self.norm_out = nn.LayerNorm(out_dim)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> FacialFeatureExtractor:
        """Build from `IDE_PRESETS[name]["facial_feature_extractor"]` ("sd21" or "tiny"), with overrides."""
        return cls(**preset_kwargs("facial_feature_extractor", name, overrides))

    def forward(
        self,
        lq_tokens: torch.Tensor,
        ref_tokens: torch.Tensor | None = None,
        ref_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, token_dim) LQ tokens, (B, K, T', token_dim) reference tokens, (B, K) bool -> (B, N_I, out_dim)."""
        d_in = self.config.token_dim
        if lq_tokens.ndim != 3 or lq_tokens.shape[-1] != d_in:
            raise ValueError(f"lq_tokens must be (B, T, {d_in}), got {tuple(lq_tokens.shape)}")
        b = lq_tokens.shape[0]
        dtype = self.queries.dtype
        refs = key_mask = None
        if ref_tokens is not None:
            if ref_tokens.ndim != 4 or ref_tokens.shape[0] != b or ref_tokens.shape[-1] != d_in:
                raise ValueError(f"ref_tokens must be (B={b}, K, T, {d_in}), got {tuple(ref_tokens.shape)}")
            k, t = ref_tokens.shape[1:3]
            if k > 0 and t > 0:
                mask = reference_mask(ref_mask, b, k, lq_tokens.device)
                refs = self.ref_in(ref_tokens.to(dtype).reshape(b, k * t, d_in))  # (B, K*T, D)
                key_mask = mask.repeat_interleave(t, dim=1)  # (B, K*T): each reference owns T consecutive keys
        elif ref_mask is not None and ref_mask.numel() > 0:
            raise ValueError(f"ref_mask {tuple(ref_mask.shape)} given without reference tokens")

        lq = self.lq_in(lq_tokens.to(dtype))  # (B, T, D)
        x = self.queries.expand(b, -1, -1)  # (B, N_I, D)
        for block in self.blocks:
            x = block(x, lq, refs, key_mask)
        return self.norm_out(self.proj_out(x))  # (B, N_I, out_dim)
