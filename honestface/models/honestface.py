"""HonestFace: the composite one-step face-restoration model (LQ face + reference faces -> restored face).

Paper: Wang et al., "HonestFace: Towards Honest Face Restoration with One-Step Diffusion Model", arXiv 2505.18469.
The pipeline figure fixes the boxes wired here (docs/architecture.md); shapes below are at SD 2.1-base size, 512x512:

    lq (B,3,512,512) --VAE enc--> z_L (B,4,64,64) ------------------------------------------+
    lq --VRE--> p_L (B,77,1024)                                                             |
    refs (B,K,3,512,512) --ArcFace--> (B,K,512) --FaceIdentityEncoder (+ LQ emb)--> p_F (B,4,1024)
    refs, lq --CLIP ViT-H/14--> tokens --FacialFeatureExtractor--> p_I (B,16,1024)          |
    [p_L; p_F; p_I] --FeatureFusion--> p (B,97,1024) --> LoRA UNet at t=399 on z_L --> eps --> z_hat --VAE dec--> x_hat
    discriminator(noised z_hat | z_H, p) -> logits (B,)

Trainable (`trainable_parameters`): the UNet LoRA, the two IDE heads, the VRE projection and the fusion. The
discriminator's head (+ optional LoRA) trains in its own optimiser step (`discriminator_parameters`). Everything
else is frozen: SD VAE and UNet base weights, the VRE encoder + LQ codebook, ArcFace, the CLIP vision tower.

References: `encode_references(refs, ref_mask)` runs the two frozen backbones once (cache the result per
identity) and `forward` accepts the features precomputed. With fusion `blind_mode="null"` (default) a sample with
no valid reference (K = 0, all masked, or `drop_refs`) gets the fusion's learned null identity tokens, exactly as in
reference-dropout training; with `blind_mode="lq"` the IDE heads compute p_F/p_I from the LQ face alone.

OSDFace compatibility (`use_ide=False`: p = p_L only, no IDE, no fusion) runs the authors' released OSDFace weights
(github.com/jkwang28/OSDFace): SD 2.1-base (`weights.sd21_base`), the VRE from `associate_2.ckpt`
(`VisualRepresentationEmbedder.from_osdface`, input_transform="osdface", 512 px), the projection
`embedding_change_weights.pth` and the UNet LoRA `pytorch_lora_weights.safetensors` (r16/alpha16) from the
`osdface_lora` folder, t = 399, posterior sampling with seed 114:
`HonestFace.from_preset("sd21", use_ide=False, osdface_weights=True, with_discriminator=False)` does all of it.

Native settings (`native_settings`, `honestface.models.native`): the face resolution, the input resize and the
timestep the model works at; presets set them (sd21: 512 px, OSDFace's bilinear resize, t = 399; tiny: 64 px) and
`save_pretrained` records them, so pipelines never take the face size from the VAE's `sample_size`.

Serialisation (our format, `honestface_folder.py`): `save_pretrained(dir)` writes `honestface_config.json`
(component configs, native settings, the frozen parts it does not hold by registry name and content hash, never a
local path, so a copied folder loads on another machine: `folder_sources.py`),
`pytorch_lora_weights.safetensors` (diffusers/OSDFace LoRA layout), `honestface_modules.safetensors` (projection,
IDE heads, fusion, discriminator head), and, only for frozen parts without an external source (random tiny models),
`frozen.safetensors`, atomically (`folder.py`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import BaseOutput
from torch import nn

from honestface.hub import PushToHubMixin
from honestface.models import honestface_folder as folder_format
from honestface.models.discriminator import LatentDiscriminator, canonical_unet_key
from honestface.models.folder import save_model_folder, state_to_save
from honestface.models.generator import LORA_FILE, OneStepGenerator
from honestface.models.honestface_folder import CONFIG_FILE, FAMILY_FILES, FROZEN_FILE, MODULES_FILE, TRAINABLE
from honestface.models.native import NativeSettings, fallback_native_settings

__all__ = ["HonestFace", "HonestFaceOutput", "ReferenceFeatures"]

FROZEN_PARTS = ("generator", "vre", "identity_backbone", "image_backbone")


@dataclass
class HonestFaceOutput(BaseOutput):
    """x_hat (B,3,H,W) [-1,1]; z_hat, z_lq, eps (B,4,H/8,W/8); prompt_embeds p (B,L,D); p_L (B,N_L,D);
    p_F (B,N_F,D) and p_I (B,N_I,D), None when not computed (use_ide=False, or every sample blind in null mode)."""

    x_hat: torch.Tensor
    z_hat: torch.Tensor
    z_lq: torch.Tensor
    eps: torch.Tensor
    prompt_embeds: torch.Tensor
    p_L: torch.Tensor
    p_F: torch.Tensor | None = None
    p_I: torch.Tensor | None = None


@dataclass
class ReferenceFeatures(BaseOutput):
    """Frozen-backbone features of a reference pool: embeddings (B,K,id_dim), tokens (B,K,T,C), mask (B,K) bool.
    A batch of 1 broadcasts over any LQ batch (one identity, many inputs)."""

    embeddings: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ReferenceFeatures:
        return ReferenceFeatures(embeddings=self.embeddings.to(device=device, dtype=dtype),
                                 tokens=self.tokens.to(device=device, dtype=dtype), mask=self.mask.to(device=device))


class HonestFace(PushToHubMixin, nn.Module):
    """Composite HonestFace model. Build with `from_preset("sd21" | "tiny")` or `from_pretrained(dir)`.

    Args:
        generator: one-step LoRA UNet + frozen VAE. vre: the VRE (its backbone is frozen here).
        face_identity_encoder, facial_feature_extractor, fusion, identity_backbone, image_backbone: the IDE path,
            all given or all None (None = OSDFace-compatible model, p = p_L).
        discriminator: the latent discriminator, or None (inference).
        sources: where frozen parts come from, `{part: {"weights": registry name, "path": str | None}}` for parts in
            ("generator", "vre", "identity_backbone", "image_backbone"); `path` is where the part was loaded from on
            this machine (None: the registry's location), kept in memory only: the saved folder names the part by
            registry name and content hash. Parts without a source are stored in the saved folder.
        native: resolution and resize the model works at (`NativeSettings` or its dict; the timestep is the
            generator's). None: the VRE's input size (else its resolution), with OSDFace's bilinear resize when the
            VRE is OSDFace's (`input_transform="osdface"`), else "area_cubic".
    """

    def __init__(self, generator: OneStepGenerator, vre: nn.Module, face_identity_encoder: nn.Module | None = None,
                 facial_feature_extractor: nn.Module | None = None, fusion: nn.Module | None = None,
                 identity_backbone: nn.Module | None = None, image_backbone: nn.Module | None = None,
                 discriminator: LatentDiscriminator | None = None,
                 sources: dict[str, dict[str, Any]] | None = None,
                 native: NativeSettings | dict[str, Any] | None = None) -> None:
        super().__init__()
        ide = (face_identity_encoder, facial_feature_extractor, fusion, identity_backbone, image_backbone)
        if any(m is None for m in ide) and any(m is not None for m in ide):
            raise ValueError("give all of face_identity_encoder, facial_feature_extractor, fusion, identity_backbone "
                             "and image_backbone (HonestFace) or none of them (OSDFace-compatible, p = p_L)")
        self.generator, self.vre = generator, vre
        self.face_identity_encoder, self.facial_feature_extractor, self.fusion = ide[:3]
        self.identity_backbone, self.image_backbone = ide[3:]
        self.discriminator = discriminator
        self.sources = {k: dict(v) for k, v in (sources or {}).items()}
        unknown = set(self.sources) - set(FROZEN_PARTS)
        if unknown:
            raise ValueError(f"unknown source part {min(unknown)!r}; allowed: {', '.join(FROZEN_PARTS)}")
        self._check_dims()
        self.native = native  # type: ignore[assignment]  (the setter normalises it)
        self.vre.requires_grad_(False)
        self.vre.freeze_backbone()
        self.vre.projection.requires_grad_(True)
        for name in TRAINABLE:
            if getattr(self, name) is not None:
                getattr(self, name).requires_grad_(True)
        if self.use_ide and self.fusion.config.blind_mode == "null":
            # Blind samples get the fusion's null tokens, so the encoder's own no-reference fallback is never used.
            for name, param in self.face_identity_encoder.named_parameters():
                if name == "null" or name.startswith("lq_to_fallback."):
                    param.requires_grad_(False)

    def _check_dims(self) -> None:
        ctx = int(self.generator.unet.config.cross_attention_dim)
        width = {"VRE out_dim": int(self.vre.config.out_dim)}
        if self.use_ide:
            fie, ffe, fus = self.face_identity_encoder.config, self.facial_feature_extractor.config, self.fusion.config
            width.update({"FaceIdentityEncoder out_dim": fie.out_dim, "FacialFeatureExtractor out_dim": ffe.out_dim,
                          "FeatureFusion dim": fus.dim})
            pairs = [("FaceIdentityEncoder id_dim", fie.id_dim, "identity backbone", self.identity_backbone.id_dim),
                     ("FacialFeatureExtractor token_dim", ffe.token_dim, "image backbone",
                      self.image_backbone.hidden_size),
                     ("FeatureFusion num_vre_tokens", fus.num_vre_tokens, "VRE num_tokens", self.vre.config.num_tokens),
                     ("FeatureFusion num_id_tokens", fus.num_id_tokens, "FaceIdentityEncoder num_tokens",
                      fie.num_tokens),
                     ("FeatureFusion num_feature_tokens", fus.num_feature_tokens, "FacialFeatureExtractor num_queries",
                      ffe.num_queries)]
            for a, va, b, vb in pairs:
                if va != vb:
                    raise ValueError(f"{a} = {va} does not match {b} = {vb}")
        for name, value in width.items():
            if value != ctx:
                raise ValueError(f"{name} = {value} must equal the UNet cross_attention_dim = {ctx}")

    @property
    def native(self) -> NativeSettings:
        return self._native

    @native.setter
    def native(self, value: NativeSettings | dict[str, Any] | None) -> None:
        if value is None:
            value = fallback_native_settings(self.vre.config)
        elif isinstance(value, dict):
            value = NativeSettings.from_dict({k: v for k, v in value.items() if k != "timestep"})
        self._native = value.replace(timestep=None)

    @property
    def native_settings(self) -> NativeSettings:
        """Resolution, input resize and timestep this model works at (what the pipelines use by default)."""
        return self._native.replace(timestep=self.generator.timestep)

    @property
    def use_ide(self) -> bool:
        return self.fusion is not None

    @property
    def unet(self) -> nn.Module:
        return self.generator.unet

    @property
    def vae(self) -> nn.Module:
        return self.generator.vae

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> HonestFace:
        """Build a named configuration ("sd21" | "tiny"); options: `honestface.models.presets.build_honestface_parts`."""
        from honestface.models.presets import build_honestface_parts

        return cls(**build_honestface_parts(name, **kwargs)).eval()

    # ------------------------------------------------------------------------------------------------- running
    def train(self, mode: bool = True) -> HonestFace:
        super().train(mode)
        self.vre.freeze_backbone()  # frozen parts stay in eval mode
        self.generator.vae.eval()
        for m in (self.identity_backbone, self.image_backbone):
            if m is not None:
                m.eval()
        return self

    @torch.no_grad()
    def encode_references(self, refs: torch.Tensor, ref_mask: torch.Tensor | None = None) -> ReferenceFeatures:
        """refs (B, K, 3, H, W) in [-1, 1], ref_mask (B, K) bool -> frozen features to cache and pass to forward."""
        if not self.use_ide:
            raise ValueError("this model has no identity embedder (use_ide=False): references are not used")
        if refs.ndim != 5 or refs.shape[2] != 3:
            raise ValueError(f"refs must be (B, K, 3, H, W), got {tuple(refs.shape)}")
        b, k = refs.shape[:2]
        mask = torch.ones(b, k, dtype=torch.bool, device=refs.device) if ref_mask is None else ref_mask
        embeddings = self.identity_backbone.embed_references(refs, mask)  # (B, K, id_dim)
        tokens = self.image_backbone.encode_references(refs, mask)  # (B, K, T, C)
        return ReferenceFeatures(embeddings=embeddings, tokens=tokens, mask=mask)

    def _references(self, b: int, refs: torch.Tensor | None, ref_mask: torch.Tensor | None,
                    ref_embeddings: torch.Tensor | None, ref_tokens: torch.Tensor | None
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(embeddings (B,K,id), tokens (B,K,T,C), mask (B,K)) or Nones when there is no reference (K = 0)."""
        if refs is not None and (ref_embeddings is None or ref_tokens is None):
            if refs.shape[1] == 0:
                return None, None, None
            feats = self.encode_references(refs, ref_mask)
            ref_embeddings = feats.embeddings if ref_embeddings is None else ref_embeddings
            ref_tokens = feats.tokens if ref_tokens is None else ref_tokens
        if ref_embeddings is None and ref_tokens is None:
            if ref_mask is not None and ref_mask.numel() > 0:
                raise ValueError("ref_mask given without refs, ref_embeddings or ref_tokens")
            return None, None, None
        if ref_embeddings is None or ref_tokens is None:
            raise ValueError("pass both ref_embeddings and ref_tokens (from encode_references), or refs")
        k = ref_embeddings.shape[1]
        if ref_embeddings.ndim != 3 or ref_tokens.ndim != 4 or ref_tokens.shape[1] != k:
            raise ValueError(f"ref_embeddings (B, K, id_dim) and ref_tokens (B, K, T, C) disagree: "
                             f"{tuple(ref_embeddings.shape)} vs {tuple(ref_tokens.shape)}")
        if k == 0:
            return None, None, None
        mask = ref_mask if ref_mask is not None else torch.ones(ref_embeddings.shape[:2], dtype=torch.bool,
                                                                 device=ref_embeddings.device)
        if ref_embeddings.shape[0] == 1 and b > 1:  # one cached identity for the whole batch
            ref_embeddings, ref_tokens = ref_embeddings.expand(b, -1, -1), ref_tokens.expand(b, -1, -1, -1)
            mask = mask.expand(b, -1)
        if ref_embeddings.shape[0] != b or tuple(mask.shape) != (b, k) or mask.dtype != torch.bool:
            raise ValueError(f"references must have batch size {b} (or 1) and a (B, K) bool mask, got embeddings "
                             f"{tuple(ref_embeddings.shape)} and mask {mask.dtype} {tuple(mask.shape)}")
        return ref_embeddings, ref_tokens, mask

    def prompt_embeds(self, lq: torch.Tensor, refs: torch.Tensor | None = None, ref_mask: torch.Tensor | None = None,
                      ref_embeddings: torch.Tensor | None = None, drop_refs: torch.Tensor | None = None, *,
                      ref_tokens: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The UNet context: (p, p_L, p_F, p_I) for lq (B, 3, H, W) and its references."""
        b = lq.shape[0]
        p_L = self.vre(lq)  # (B, N_L, D)
        if not self.use_ide:
            if any(x is not None for x in (refs, ref_embeddings, ref_tokens)):
                raise ValueError("this model has no identity embedder (use_ide=False): do not pass references")
            return p_L, p_L, None, None
        emb, tokens, mask = self._references(b, refs, ref_mask, ref_embeddings, ref_tokens)
        if drop_refs is not None and (drop_refs.dtype != torch.bool or tuple(drop_refs.shape) != (b,)):
            raise ValueError(f"drop_refs must be a (B={b},) bool tensor, got {drop_refs.dtype} "
                             f"{tuple(drop_refs.shape)}")
        p_F = p_I = None
        if self.fusion.config.blind_mode == "null":
            # no valid reference == dropped: the fusion's null identity tokens, as in reference-dropout training
            blind = torch.ones(b, dtype=torch.bool, device=lq.device) if mask is None else ~mask.any(1)
            drop = blind if drop_refs is None else blind | drop_refs.to(lq.device)
            if not bool(drop.all()):
                p_F, p_I = self._identity_tokens(lq, emb, tokens, mask)
            return self.fusion(p_L, p_F, p_I, drop), p_L, p_F, p_I
        if mask is not None and drop_refs is not None:  # blind_mode "lq": dropped samples keep no reference
            mask = mask & ~drop_refs.to(mask.device)[:, None]
        p_F, p_I = self._identity_tokens(lq, emb, tokens, mask)
        return self.fusion(p_L, p_F, p_I), p_L, p_F, p_I

    def _identity_tokens(self, lq: torch.Tensor, emb: torch.Tensor | None, tokens: torch.Tensor | None,
                         mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            lq_emb = self.identity_backbone(lq)  # (B, id_dim)
            lq_tokens = self.image_backbone(lq)  # (B, T, C)
        p_F = self.face_identity_encoder(emb, mask, lq_emb)  # (B, N_F, D)
        p_I = self.facial_feature_extractor(lq_tokens, tokens, mask)  # (B, N_I, D)
        return p_F, p_I

    def forward(self, lq: torch.Tensor, refs: torch.Tensor | None = None, ref_mask: torch.Tensor | None = None,
                ref_embeddings: torch.Tensor | None = None, drop_refs: torch.Tensor | None = None, *,
                ref_tokens: torch.Tensor | None = None, generator: torch.Generator | None = None) -> HonestFaceOutput:
        """Restore lq (B, 3, H, W) in [-1, 1] given references refs (B, K, 3, H, W) | None (K may be 0),
        ref_mask (B, K) bool, or precomputed ref_embeddings (B, K, id_dim) + ref_tokens (B, K, T, C);
        drop_refs (B,) bool drops a sample's references (reference dropout). `generator` seeds the VAE sampling."""
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq must be (B, 3, H, W) in [-1, 1], got {tuple(lq.shape)}")
        z_lq = self.generator.encode(lq, generator=generator)  # (B, 4, H/8, W/8)
        p, p_L, p_F, p_I = self.prompt_embeds(lq, refs, ref_mask, ref_embeddings, drop_refs, ref_tokens=ref_tokens)
        eps, z_hat = self.generator.denoise(z_lq, p)  # (B, 4, H/8, W/8) each
        x_hat = self.generator.decode(z_hat)  # (B, 3, H, W)
        return HonestFaceOutput(x_hat=x_hat, z_hat=z_hat, z_lq=z_lq, eps=eps, prompt_embeds=p, p_L=p_L, p_F=p_F,
                                p_I=p_I)

    def encode_latents(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frozen VAE latents (e.g. z_H of the ground truth for the discriminator), same mode as z_L."""
        return self.generator.encode(images, generator=generator)

    def merge_lora(self) -> None:
        self.generator.merge_lora()

    def enable_gradient_checkpointing(self) -> None:
        self.generator.enable_gradient_checkpointing()

    # ------------------------------------------------------------------------------------------------ parameters
    def _trainable(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self.named_parameters():
            if name.startswith("discriminator."):
                continue
            in_unet = name.startswith("generator.unet.")
            if (".lora_" in name and in_unet) or name.startswith("vre.projection.") \
                    or (in_unet and self.generator.train_base and param.requires_grad) \
                    or (name.split(".", 1)[0] in TRAINABLE and param.requires_grad):
                yield name, param

    def trainable_parameter_names(self) -> list[str]:
        """Names (as in `named_parameters`) of the generator-side trainable parameters."""
        return [n for n, _ in self._trainable()]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self._trainable()]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [] if self.discriminator is None else self.discriminator.trainable_parameters()

    # ------------------------------------------------------------------------------------------------ saving
    def _modules_state(self) -> dict[str, torch.Tensor]:
        state = {f"vre.projection.{k}": v for k, v in self.vre.projection.state_dict().items()}
        for name in TRAINABLE:
            if getattr(self, name) is not None:
                state.update({f"{name}.{k}": v for k, v in getattr(self, name).state_dict().items()})
        if self.discriminator is not None:
            state.update({f"discriminator.{k}": v for k, v in self.discriminator.trainable_state_dict().items()})
        return state

    def _frozen_state(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        if "generator" not in self.sources or self.generator.train_base:  # random or trained base UNet
            for k, v in self.generator.unet.state_dict().items():
                if (c := canonical_unet_key(k)) is not None:
                    state[f"generator.unet.{c}"] = v
        if "generator" not in self.sources:
            state.update({f"generator.vae.{k}": v for k, v in self.generator.vae.state_dict().items()})
        if "vre" not in self.sources:
            state.update({f"vre.{k}": v for k, v in self.vre.state_dict().items() if not k.startswith("projection.")})
        for part in ("identity_backbone", "image_backbone"):
            if getattr(self, part) is not None and part not in self.sources:
                state.update({f"{part}.{k}": v for k, v in getattr(self, part).state_dict().items()})
        return state

    def config_dict(self) -> dict[str, Any]:
        """What `save_pretrained` writes to honestface_config.json."""
        cfg: dict[str, Any] = {"format": "honestface", "version": 1, "use_ide": self.use_ide,
                               "native": self.native_settings.to_dict(),
                               "sources": folder_format.saved_sources(self.sources),
                               "generator": self.generator.config,
                               "vre": folder_format.plain_config(self.vre.config),
                               "discriminator": None if self.discriminator is None
                               else folder_format.plain_config(self.discriminator.config)}
        if "generator" not in self.sources:
            cfg["generator_architecture"] = folder_format.generator_architecture(self.generator)
        if self.use_ide:
            for name in TRAINABLE:
                cfg[name] = folder_format.plain_config(getattr(self, name).config)
            cfg["identity_backbone"] = folder_format.identity_backbone_spec(self.identity_backbone)
            cfg["image_backbone"] = folder_format.image_backbone_spec(self.image_backbone)
        return cfg

    def save_pretrained(self, folder: str | os.PathLike, *, push_to_hub: bool = False, repo_id: str | None = None,
                        **hub_options: Any) -> Path:
        """Write the model folder (config, LoRA, trained modules, frozen parts without an external source),
        atomically (`honestface.models.folder`); returns it. `push_to_hub=True` then uploads it with a generated
        model card to `repo_id` (default: the folder's name in your account); hub_options: `honestface.hub.
        push_folder`'s (private, token, commit_message, create_pr, evaluation, training, license, base_model)."""
        from safetensors.torch import save_file

        self._check_push(push_to_hub, repo_id, hub_options)
        if self.generator.lora_merged:
            raise ValueError("the LoRA is merged into the UNet; save before merge_lora() (merging is for inference)")
        frozen = self._frozen_state()

        def write_weights(tmp: Path) -> None:
            if self.generator.has_lora:
                self.generator.save_lora(tmp / LORA_FILE)
            save_file(state_to_save(self._modules_state()), str(tmp / MODULES_FILE))
            if frozen:
                save_file(state_to_save(frozen), str(tmp / FROZEN_FILE))

        out = save_model_folder(folder, CONFIG_FILE, self.config_dict(), write_weights, FAMILY_FILES)
        return self._push_saved(out, push_to_hub, repo_id, hub_options)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, weights: dict[str, str] | None = None,
                        with_discriminator: bool | None = None, dtype: torch.dtype | None = None, *,
                        verify_sources: bool = True, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        local_files_only: bool = False, channels_last: bool = False,
                        **frozen_paths: str | os.PathLike) -> HonestFace:
        """Load a folder written by `save_pretrained` (or a Hub id `org/name`, see `honestface.hub`). Frozen parts
        the folder does not hold are found through the weights registry by their recorded name ($HONESTFACE_HOME);
        give the path of any with its registry name, e.g. `from_pretrained(d, sd21_base="/data/sd21")`, or a
        `weights` dict (the config's `weights:` section; unrelated names are ignored). Each must have the content
        hash recorded at saving, else a one-line SourceMismatchError; `verify_sources=False` loads it anyway
        (`honestface.models.folder_sources`).
        `with_discriminator=False` skips the discriminator (inference). `dtype` (e.g. torch.bfloat16): the
        weights are cast while they are read, so the model never exists in float32 (half the peak memory).
        `channels_last=True`: the convolution weights the folder holds are read straight into channels-last layout
        (parts found elsewhere keep theirs; `model.to(memory_format=torch.channels_last)` converts those).
        `folder` may also be a released model name ("osdface"): its files are found through the weights
        registry and converted once into a cached folder in `dtype` (`honestface.models.released`), or a Hugging
        Face Hub id "org/name" at `revision` (branch, tag or commit), fetched into the Hub cache (`cache_dir`,
        `token`, `local_files_only`; offline once cached: `honestface.hub`)."""
        from honestface.hub import resolve_model_dir
        from honestface.models.loading import check_materialised, release_free_memory
        from honestface.models.released import resolve_pretrained

        folder = resolve_model_dir(folder, family="honestface", revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=local_files_only)
        paths = {**(weights or {}), **frozen_paths}
        folder = Path(resolve_pretrained(folder, "honestface", paths, dtype))
        parts = folder_format.load_honestface_parts(folder, paths, with_discriminator,
                                                    strict_names=set(frozen_paths), dtype=dtype,
                                                    verify_sources=verify_sources, channels_last=channels_last)
        model = cls(**parts)
        check_materialised(model, str(folder))
        if dtype is not None:
            model.to(dtype=dtype)  # the parts loaded from their sources, the LoRA, buffers
        del parts
        release_free_memory()
        return model.eval()
