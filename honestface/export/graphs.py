"""Export-ready wrappers of the HonestFace inference graphs: small `nn.Module`s with tensor-only inputs and outputs
that `torch.onnx.export` can trace, each computing exactly what the torch model computes for that step.

Graphs (names = the .onnx file stems; B, N, K are dynamic):
- `vae_encoder`: lq (B, 3, R, R) in [-1, 1], noise (B, C, h, w) -> z_lq = (mean + std * noise - shift) * scale. The
  noise is an input so the runtime draws it with the same per-face `torch.Generator` as the torch pipeline
  (`encode_mode="mode"`: zeros, giving the posterior mean).
- `vre`: lq -> p_L (B, T, D).
- `ide_image`: lq -> lq_embedding (B, id), lq_tokens (B, T', C): the frozen identity / image backbones on the LQ face.
- `ide_reference`: refs (N, 3, R, R) -> ref_embeddings (N, id), ref_tokens (N, T', C): the same backbones on the
  reference faces (the runtime caches them per reference set and pads to (B, K, ...)).
- `fusion`: p_L, lq_embedding, lq_tokens, ref_embeddings (B, K, id), ref_tokens (B, K, T', C), ref_mask (B, K) bool
  -> p: the IDE heads and the feature fusion (`HonestFace.prompt_embeds` with precomputed references).
- `fusion_blind`: p_L, lq_embedding, lq_tokens -> p, the same for a batch without any reference.
- `unet`: z_lq, p -> z_hat: the LoRA-merged UNet at the fixed timestep and the one-step x0 formula (float64 inside).
- `vae_decoder`: z_hat -> x_hat (B, 3, R, R), clamped to [-1, 1].

Our choice: the VRE's code selection is rewritten without `sort(stable=True)` and `scatter_reduce` (no ONNX export):
ONNX TopK (largest=False) breaks ties by the lower index, i.e. a stable ascending sort, and the first occurrence of a
code is found with an (N, N) comparison; the result equals `honestface.models.vre.select_unique_codes`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from honestface.models.generator import one_step_x0
from honestface.models.vqgan import squared_distances

__all__ = ["HONESTFACE_GRAPHS", "honestface_graphs", "select_unique_codes_exportable"]

HONESTFACE_GRAPHS = ("vae_encoder", "vre", "ide_image", "ide_reference", "fusion", "fusion_blind", "unet",
                     "vae_decoder")


def select_unique_codes_exportable(z: torch.Tensor, codebook: torch.Tensor, num_tokens: int
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`select_unique_codes` (honestface.models.vre) with exportable ops: same indices (B, T) int64 and valid mask."""
    n = z.shape[2] * z.shape[3]
    dist = squared_distances(z.flatten(2).transpose(1, 2), codebook)  # (B, N, K)
    min_dist, nearest = dist.min(dim=2)  # (B, N)
    order = torch.topk(min_dist, n, dim=1, largest=False, sorted=True).indices  # ONNX TopK: ties -> lower index
    codes = nearest.gather(1, order)  # (B, N)
    pos = torch.arange(n, device=z.device)
    earlier = pos[None, :] < pos[:, None]  # (N, N): [i, j] = j comes before i
    seen = ((codes[:, :, None] == codes[:, None, :]) & earlier).any(2)  # (B, N)
    is_first = ~seen
    rank = is_first.long().cumsum(1) - 1  # (B, N)
    slots = torch.arange(num_tokens, device=z.device)
    hit = is_first[:, :, None] & (rank[:, :, None] == slots)  # (B, N, T): cell i fills slot t
    valid = hit.any(1)  # (B, T)
    indices = (hit.long() * codes[:, :, None]).sum(1)
    return torch.where(valid, indices, torch.full_like(indices, -1)), valid


class _VAEEncoder(nn.Module):
    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.vae = generator.vae
        self.scale, self.shift = generator.scaling_factor, generator.shift_factor

    def forward(self, lq: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        dist = self.vae.encode(lq).latent_dist
        return (dist.mean + dist.std * noise - self.shift) * self.scale


class _VRE(nn.Module):
    def __init__(self, vre: nn.Module) -> None:
        super().__init__()
        self.vre = vre

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        z = self.vre.encode(lq)
        indices, valid = select_unique_codes_exportable(z, self.vre.codebook, self.vre.config.num_tokens)
        vectors = F.embedding(indices.clamp(min=0), self.vre.codebook)
        vectors = vectors * valid.unsqueeze(-1).to(vectors.dtype)
        return self.vre.projection(vectors)


class _Backbones(nn.Module):
    def __init__(self, identity_backbone: nn.Module, image_backbone: nn.Module) -> None:
        super().__init__()
        self.identity_backbone, self.image_backbone = identity_backbone, image_backbone

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.identity_backbone(images), self.image_backbone(images)


class _Fusion(nn.Module):
    def __init__(self, model: nn.Module, with_refs: bool) -> None:
        super().__init__()
        self.fie, self.ffe, self.fusion = model.face_identity_encoder, model.facial_feature_extractor, model.fusion
        self.with_refs = with_refs

    def forward(self, p_L: torch.Tensor, lq_embedding: torch.Tensor, lq_tokens: torch.Tensor,
                ref_embeddings: torch.Tensor | None = None, ref_tokens: torch.Tensor | None = None,
                ref_mask: torch.Tensor | None = None) -> torch.Tensor:
        # HonestFace.prompt_embeds / _identity_tokens with precomputed backbone outputs
        if self.fusion.config.blind_mode == "null":
            if not self.with_refs:
                drop = torch.ones(p_L.shape[0], dtype=torch.bool, device=p_L.device)
                return self.fusion(p_L, None, None, drop)
            drop = ~ref_mask.any(1)
            p_F = self.fie(ref_embeddings, ref_mask, lq_embedding)
            p_I = self.ffe(lq_tokens, ref_tokens, ref_mask)
            return self.fusion(p_L, p_F, p_I, drop)
        p_F = self.fie(ref_embeddings, ref_mask, lq_embedding)
        p_I = self.ffe(lq_tokens, ref_tokens, ref_mask)
        return self.fusion(p_L, p_F, p_I)


class _UNet(nn.Module):
    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.unet, self.t = generator.unet, int(generator.timestep)
        self.alpha_bar, self.prediction_type = generator.alpha_bar(), generator.prediction_type

    def forward(self, z_lq: torch.Tensor, prompt_embeds: torch.Tensor) -> torch.Tensor:
        out = self.unet(z_lq, self.t, encoder_hidden_states=prompt_embeds).sample
        return one_step_x0(z_lq, out, self.alpha_bar, self.prediction_type)[1]


class _VAEDecoder(nn.Module):
    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.generator.decode(z_hat)


def honestface_graphs(model: nn.Module, batch: int = 2, num_refs: int = 2
                      ) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], list[str], list[str], dict]]:
    """name -> (module, example inputs, input names, output names, dynamic axes) for a float32 HonestFace whose
    LoRA is merged. Graphs of the identity path are left out when the model has none (`use_ide=False`)."""
    gen, r = model.generator, model.native_settings.resolution
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(batch, 3, r, r, generator=g) * 2 - 1
    with torch.no_grad():
        z_shape = gen.vae.encode(lq[:1]).latent_dist.mean.shape[1:]
        z_lq = torch.randn(batch, *z_shape, generator=g)
        p_L = model.vre(lq)
    noise = torch.randn(batch, *z_shape, generator=g)
    b = {0: "batch"}
    graphs = {"vae_encoder": (_VAEEncoder(gen), (lq, noise), ["lq", "noise"], ["z_lq"],
                              {"lq": b, "noise": b, "z_lq": b}),
              "vre": (_VRE(model.vre), (lq,), ["lq"], ["p_L"], {"lq": b, "p_L": b})}
    if model.use_ide:
        backbones = _Backbones(model.identity_backbone, model.image_backbone)
        with torch.no_grad():
            emb, tok = backbones(lq)
        k = num_refs
        ref_emb = emb[:, None].repeat(1, k, 1)
        ref_tok = tok[:, None].repeat(1, k, 1, 1)
        mask = torch.ones(batch, k, dtype=torch.bool)
        mask[0, 1:] = False
        n = {0: "num_refs"}
        bk = {0: "batch", 1: "refs_per_face"}
        graphs["ide_image"] = (backbones, (lq,), ["lq"], ["lq_embedding", "lq_tokens"],
                               {"lq": b, "lq_embedding": b, "lq_tokens": b})
        graphs["ide_reference"] = (backbones, (lq,), ["refs"], ["ref_embeddings", "ref_tokens"],
                                   {"refs": n, "ref_embeddings": n, "ref_tokens": n})
        names = ["p_L", "lq_embedding", "lq_tokens", "ref_embeddings", "ref_tokens", "ref_mask"]
        graphs["fusion"] = (_Fusion(model, True), (p_L, emb, tok, ref_emb, ref_tok, mask), names, ["prompt_embeds"],
                            {"p_L": b, "lq_embedding": b, "lq_tokens": b, "ref_embeddings": bk, "ref_tokens": bk,
                             "ref_mask": bk, "prompt_embeds": b})
        graphs["fusion_blind"] = (_Fusion(model, False), (p_L, emb, tok), names[:3], ["prompt_embeds"],
                                  {"p_L": b, "lq_embedding": b, "lq_tokens": b, "prompt_embeds": b})
        with torch.no_grad():
            p = model.fusion(p_L, None, None, torch.ones(batch, dtype=torch.bool))
    else:
        p = p_L
    graphs["unet"] = (_UNet(gen), (z_lq, p), ["z_lq", "prompt_embeds"], ["z_hat"],
                      {"z_lq": b, "prompt_embeds": b, "z_hat": b})
    graphs["vae_decoder"] = (_VAEDecoder(gen), (z_lq,), ["z_hat"], ["x_hat"], {"z_hat": b, "x_hat": b})
    return graphs
