"""Identity Embedder (IDE) of HonestFace: presets and the masked attention shared by its two components.

Paper component: the "Identity Embedder" of HonestFace (Wang et al., arXiv 2505.18469, pipeline figure), a dashed
box holding the **Face Identity Encoder** (input: the reference pool; output p_F) and the **Facial Feature
Extractor** (input: the reference pool and the LQ face; output p_I). Its output is fused with the VRE prompt p_L
into the UNet context (see `fusion.py`).

The paper's IDE internals (its Figs. 2 and 3) are not public, so everything below is **our design**
(docs/architecture.md), kept configurable:

| module                        | class                                        | trainable | output               |
|-------------------------------|----------------------------------------------|-----------|----------------------|
| face_identity_encoder.py      | `IdentityBackbone` (ArcFace iResNet)          | frozen    | (B, id_dim) unit norm |
|                               | `FaceIdentityEncoder` (pooling + MLP)        | yes       | p_F (B, N_F, dim)    |
| facial_feature_extractor.py   | `ImageTokenBackbone` (CLIP vision tower)     | frozen    | (B, T, hidden)       |
|                               | `FacialFeatureExtractor` (perceiver)         | yes       | p_I (B, N_I, dim)    |

The trainable components take precomputed embeddings / tokens, not images, so reference features can be computed
once per identity and cached, and the quickstart can feed the bundled dlib 128-D descriptor (`id_dim=128`).
Frozen backbones are plain `nn.Module`s kept outside the trainable components' saved weights.

Presets (our choice): "sd21" matches SD 2.1-base's 1024-wide cross-attention context with ArcFace 512-D embeddings
and OpenCLIP ViT-H/14 tokens (1280 wide, 257 per image, as IP-Adapter's image encoder); "tiny" is for CPU tests.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

IDE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "sd21": {
        "face_identity_encoder": {
            "id_dim": 512, "num_tokens": 4, "out_dim": 1024, "num_heads": 8, "hidden_dim": 1024, "use_lq": True,
        },
        "facial_feature_extractor": {
            "token_dim": 1280, "num_queries": 16, "out_dim": 1024, "depth": 2, "num_heads": 8, "ff_mult": 4,
        },
    },
    "tiny": {
        "face_identity_encoder": {
            "id_dim": 16, "num_tokens": 2, "out_dim": 32, "num_heads": 2, "hidden_dim": 32, "use_lq": True,
        },
        "facial_feature_extractor": {
            "token_dim": 32, "num_queries": 4, "out_dim": 32, "depth": 2, "num_heads": 2, "ff_mult": 4,
        },
    },
}

# A transformers CLIPVisionConfig of the size used in tests: 32 px, patch 8 -> 16 + 1 = 17 tokens of width 32.
TINY_CLIP_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
    "intermediate_size": 37,
}


def preset_kwargs(component: str, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of `component` ("face_identity_encoder" | "facial_feature_extractor") in preset `name`."""
    if name not in IDE_PRESETS:
        raise ValueError(f"unknown IDE preset {name!r}; allowed: {', '.join(IDE_PRESETS)}")
    return {**IDE_PRESETS[name][component], **overrides}


def reference_mask(
    ref_mask: torch.Tensor | None, batch_size: int, num_refs: int, device: torch.device
) -> torch.Tensor:
    """Validate a (B, K) bool reference mask (True = a real reference), or build an all-True one when None."""
    if ref_mask is None:
        return torch.ones(batch_size, num_refs, dtype=torch.bool, device=device)
    if ref_mask.dtype != torch.bool:
        raise ValueError(f"ref_mask must be a bool tensor (True = real reference), got dtype {ref_mask.dtype}")
    if tuple(ref_mask.shape) != (batch_size, num_refs):
        raise ValueError(f"ref_mask must have shape (B={batch_size}, K={num_refs}), got {tuple(ref_mask.shape)}")
    return ref_mask.to(device)


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-head attention with a key padding mask that may mask every key of a row.

    q (B, H, Q, d), k and v (B, H, N, d), key_mask (B, N) bool (True = attend) or None.
    Returns (out (B, H, Q, d), has_key (B,) bool). Rows without any valid key (N = 0 or all masked) get an exact
    zero output: their mask is opened to all keys before `scaled_dot_product_attention` (a fully masked softmax
    would give NaN, also in the backward pass) and the result is then zeroed, so no gradient reaches those keys.
    """
    b, n = q.shape[0], k.shape[2]
    if n == 0:
        return q.new_zeros(q.shape[:3] + (v.shape[-1],)), torch.zeros(b, dtype=torch.bool, device=q.device)
    if key_mask is None:
        return F.scaled_dot_product_attention(q, k, v), torch.ones(b, dtype=torch.bool, device=q.device)
    has_key = key_mask.any(dim=1)  # (B,)
    safe = key_mask | ~has_key[:, None]  # (B, N): rows without keys attend to junk, zeroed below
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :])  # (B, H, Q, d)
    return out * has_key[:, None, None, None].to(out.dtype), has_key
