"""Identity loss L_ID of HonestFace: 1 - cosine similarity of ArcFace embeddings of restored and true faces.

Paper component: `L_ID(x̂_H, x_H)` of HonestFace (Wang et al., arXiv 2505.18469, pipeline figure), inherited from
OSDFace (Wang et al., CVPR 2025, loss ablation: L_ID with EA-DISTS and L_G). The recogniser is not named; we use a
differentiable ArcFace (Deng et al., CVPR 2019) iResNet in the insightface `arcface_torch` layout (registry entries
`arcface_torch_r50` / `arcface_torch_r100`), since insightface's ONNX models cannot back-propagate.

The face is warped to the 112x112 ArcFace crop with the differentiable OpenCV-exact warp of
`honestface.face.alignment`: for FFHQ-aligned S x S faces (the training data) the warp is the fixed similarity from
the FFHQ template at S px onto the ArcFace template (done by `honestface.models.IdentityBackbone`, reused here);
when per-sample 5 points (B, 5, 2) are given, each sample gets its own least-squares similarity instead.

Our choices: the same points align x̂_H and x_H (the restoration keeps the geometry of its ground truth); target
embeddings are computed under no_grad (or passed in precomputed, e.g. cached per identity); the loss is the batch
mean of 1 - cos; the recogniser is frozen and stays in eval mode (BatchNorm statistics fixed).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from honestface.face.alignment import align_faces_torch
from honestface.models.face_identity_encoder import IdentityBackbone


class IdentityLoss(nn.Module):
    """L_ID = mean_b (1 - cos(ArcFace(x̂_H), ArcFace(x_H))).

    Args:
        backbone: an `IdentityBackbone` (frozen iResNet + FFHQ -> ArcFace warp) or a bare recogniser mapping
            (B, 3, 112, 112) in [-1, 1] to (B, D) with a `num_features` attribute (e.g. `IResNet`), which is wrapped.

    forward(x_hat, x=None, points5=None, target_embeddings=None) -> (loss scalar, {"id_cos": mean cosine}).
    x_hat, x: (B, 3, S, S) FFHQ-aligned faces in [-1, 1] (any size, with `points5` any H x W); points5: (B, 5, 2)
    pixel coordinates (left eye, right eye, nose, left / right mouth corner) shared by x_hat and x;
    target_embeddings: (B, D) embeddings of the targets (used instead of x; normalised here).
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        if not isinstance(backbone, IdentityBackbone):
            if not hasattr(backbone, "num_features"):
                raise ValueError(f"IdentityLoss needs an IdentityBackbone or a recogniser with `num_features`, got "
                                 f"{type(backbone).__name__}")
            backbone = IdentityBackbone(backbone)
        self.backbone = backbone

    @classmethod
    def from_weights(cls, name: str = "arcface_torch_r50", path: str | os.PathLike | None = None) -> IdentityLoss:
        """Build from a registry entry (`arcface_torch_r50` / `arcface_torch_r100`); `path` overrides the cache."""
        return cls(IdentityBackbone.from_weights(name, path))

    @classmethod
    def build(cls, network: str = "arcface", path: str | os.PathLike | None = None,
              backbone: nn.Module | None = None) -> IdentityLoss:
        """By recogniser name: "arcface" (arcface_torch r50, `path` overrides the cache), "dlib" (the bundled,
        pretrained dlib ResNet: real and offline; `path`: another copy of its .dat), "model" (`backbone`, e.g. the
        model's own identity backbone), "random" (an untrained tiny iResNet: tests and offline smoke runs)."""
        from honestface.models.face_identity_encoder import IdentityBackbone

        if network == "arcface":
            return cls.from_weights("arcface_torch_r50", path)
        if network == "dlib":
            return cls(IdentityBackbone.dlib(path))
        if network == "random":
            return cls(IdentityBackbone.tiny())
        if network == "model":
            if backbone is None:
                raise ValueError("identity network 'model' needs the model's identity backbone (this model has none)")
            return cls(backbone)
        raise ValueError(f"unknown identity network {network!r}; allowed: arcface, dlib, model, random")

    @property
    def id_dim(self) -> int:
        return self.backbone.id_dim

    def embed(self, images: torch.Tensor, points5: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, D) unit-norm embeddings, differentiable w.r.t. `images`."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"IdentityLoss expects (B, 3, H, W) images in [-1, 1], got {tuple(images.shape)}")
        if points5 is None:
            return self.backbone(images)
        if tuple(points5.shape) != (images.shape[0], 5, 2):
            raise ValueError(f"points5 must be (B={images.shape[0]}, 5, 2), got {tuple(points5.shape)}")
        net = self.backbone.net
        dtype = next(net.parameters()).dtype
        crops = align_faces_torch(
            images.to(dtype), points5.detach(), template=self.backbone.crop_template, size=self.backbone.crop_size,
            border="constant", border_value=self.backbone.border_value,
        )  # (B, 3, C, C): 112 for ArcFace, 150 for dlib
        return F.normalize(net(crops), dim=-1)

    def forward(
        self,
        x_hat: torch.Tensor,
        x: torch.Tensor | None = None,
        points5: torch.Tensor | None = None,
        target_embeddings: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if target_embeddings is None:
            if x is None:
                raise ValueError("IdentityLoss needs the target images x or their target_embeddings")
            if x.shape != x_hat.shape:
                raise ValueError(f"x_hat {tuple(x_hat.shape)} and x {tuple(x.shape)} must have the same shape")
            with torch.no_grad():
                target = self.embed(x, points5)  # (B, D)
        else:
            if tuple(target_embeddings.shape) != (x_hat.shape[0], self.id_dim):
                raise ValueError(f"target_embeddings must be (B={x_hat.shape[0]}, {self.id_dim}), got "
                                 f"{tuple(target_embeddings.shape)}")
            target = F.normalize(target_embeddings.detach(), dim=-1)
        emb = self.embed(x_hat, points5)  # (B, D)
        cos = (emb.float() * target.to(emb.device).float()).sum(-1)  # (B,)
        return (1 - cos).mean(), {"id_cos": cos.mean().detach()}
