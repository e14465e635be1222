"""Named HonestFace configurations ("sd21", "tiny") and the builder behind `HonestFace.from_preset` (the folder
format behind `save_pretrained` / `from_pretrained` is `honestface_folder.py`; neither imports the composite).

"sd21" is the paper scale (docs/architecture.md): SD 2.1-base UNet + VAE (registry `sd21_base`),
the OSDFace VRE (`osdface_vre`), ArcFace iResNet-50 (`arcface_torch_r50`) and the CLIP ViT-H/14 vision tower
(`clip_vit_h14_vision`); `pretrained=False` builds the same architecture with random weights (parameter counting,
CPU smoke tests). "tiny" is all random and small for CPU tests: 64x64 faces, 32x32 latents, context width 32.

The config dicts below are the public diffusers / transformers configs of those models [our transcription; real
weights always bring their own config.json]. Sizes we chose (tiny widths, the discriminator's head) are ours.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from honestface.models.discriminator import LatentDiscriminator
from honestface.models.face_identity_encoder import FaceIdentityEncoder, IdentityBackbone
from honestface.models.facial_feature_extractor import FacialFeatureExtractor, ImageTokenBackbone
from honestface.models.fusion import FeatureFusion
from honestface.models.generator import OneStepGenerator
from honestface.models.ide import TINY_CLIP_VISION_CONFIG
from honestface.models.vre import VisualRepresentationEmbedder

__all__ = ["CLIP_VIT_H14_VISION_CONFIG", "SD21_SCHEDULER_CONFIG", "SD21_UNET_CONFIG", "SD21_VAE_CONFIG",
           "TINY_UNET_CONFIG", "TINY_VAE_CONFIG", "build_honestface_parts"]

SD21_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "attention_head_dim": (5, 10, 20, 20), "cross_attention_dim": 1024, "use_linear_projection": True,
    "upcast_attention": True, "norm_num_groups": 32, "act_fn": "silu", "flip_sin_to_cos": True, "freq_shift": 0,
}
SD21_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32, "act_fn": "silu", "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD21_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
}
TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 32, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"), "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": 8, "cross_attention_dim": 32, "use_linear_projection": True, "norm_num_groups": 32,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "block_out_channels": (32, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2, "norm_num_groups": 32,
    "sample_size": 64, "scaling_factor": 0.18215,
}
# OpenCLIP ViT-H/14 vision tower as transformers CLIPVisionConfig (IP-Adapter's image_encoder/config.json sizes)
CLIP_VIT_H14_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 16, "num_hidden_layers": 32,
    "image_size": 224, "patch_size": 14, "projection_dim": 1024, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
}

# native: the face resolution and input resize (honestface.models.native). sd21 = OSDFace's released inference
# (512 px, bilinear; its UNet/VAE files say sample_size 768 / 64 latents, never used as the face size); tiny = 64 px.
_PRESETS: dict[str, dict[str, Any]] = {
    "sd21": {"unet": SD21_UNET_CONFIG, "vae": SD21_VAE_CONFIG, "clip": CLIP_VIT_H14_VISION_CONFIG, "vre": "osdface",
             "ide": "sd21", "iresnet": "ir50", "id_dim": 512, "native": {"resolution": 512, "resize": "bilinear"}},
    "tiny": {"unet": TINY_UNET_CONFIG, "vae": TINY_VAE_CONFIG, "clip": TINY_CLIP_VISION_CONFIG, "vre": "tiny",
             "ide": "tiny", "iresnet": None, "id_dim": 16, "native": {"resolution": 64, "resize": "area_cubic"}},
}
_PARTS = ("generator", "vre", "identity_backbone", "image_backbone")
_GENERATOR_KEYS = ("lora_rank", "lora_alpha", "lora_target_modules", "lora_dropout", "timestep", "encode_mode",
                   "prediction_type", "train_base")


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed random initialisation without touching the caller's global RNG state."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_honestface_parts(name: str, *, use_ide: bool = True, with_discriminator: bool = True,
                     pretrained: bool | Sequence[str] | None = None, weights: dict[str, str] | None = None,
                     osdface_weights: bool = False, identity_weights: str = "arcface_torch_r50",
                     image_layer: int = -2, seed: int | None = 0, unet: dict[str, Any] | None = None,
                     vae: dict[str, Any] | None = None, vre: dict[str, Any] | None = None,
                     face_identity_encoder: dict[str, Any] | None = None,
                     facial_feature_extractor: dict[str, Any] | None = None, fusion: dict[str, Any] | None = None,
                     discriminator: dict[str, Any] | None = None, vae_path: str | None = None,
                     vre_path: str | None = None, resolution: int | None = None, resize: str | None = None,
                     **generator_options: Any) -> dict[str, Any]:
    """The parts of HonestFace preset `name` ("sd21" | "tiny"): `HonestFace(**parts)` keyword arguments (what
    `HonestFace.from_preset` builds the model from).

    pretrained: load the external weights (default: True for "sd21"; "tiny" has none), or the names of the parts
    to load ("generator", "vre", "identity_backbone", "image_backbone"; the rest random). weights: registry name ->
    local path (the config's `weights:` section), e.g. {"sd21_base": "/data/sd21"}; missing names are looked up in
    $HONESTFACE_HOME. osdface_weights: also load OSDFace's UNet LoRA and VRE projection (`osdface_lora`).
    use_ide=False: the OSDFace-compatible model (p = p_L). seed: seeds random initialisation (global RNG untouched).
    unet / vae: config overrides for random init; vre, face_identity_encoder, facial_feature_extractor, fusion,
    discriminator: constructor overrides. vae_path / vre_path: a trained `AutoencoderKL` folder / a
    `VisualRepresentationEmbedder` folder (the `vae` and `vre` training stages export them) used, frozen, instead of
    random ones (the small-scale recipe). resolution / resize: the native face size and input resize (default: the
    preset's, see `_PRESETS`). Remaining keywords are generator options (lora_rank, lora_alpha,
    lora_target_modules, lora_dropout, timestep, encode_mode, prediction_type, train_base).
    """
    from honestface.models.folder_sources import source_path
    from honestface.weights import resolve_weight

    if name not in _PRESETS:
        raise ValueError(f"unknown HonestFace preset {name!r}; allowed: {', '.join(_PRESETS)}")
    bad = sorted(set(generator_options) - set(_GENERATOR_KEYS))
    if bad:
        raise ValueError(f"unknown HonestFace preset option {bad[0]!r}; generator options: "
                         f"{', '.join(_GENERATOR_KEYS)}")
    spec, weights = _PRESETS[name], dict(weights or {})
    pretrained = (name == "sd21") if pretrained is None else pretrained
    if pretrained is True and name == "tiny":
        raise ValueError("the 'tiny' preset has no pretrained weights (use pretrained=False)")
    load = set(_PARTS) if pretrained is True else set() if pretrained is False else set(pretrained)
    if load - set(_PARTS):
        raise ValueError(f"unknown part {min(load - set(_PARTS))!r} in pretrained; allowed: {', '.join(_PARTS)}")
    if osdface_weights and not {"generator", "vre"} <= load:
        raise ValueError("osdface_weights=True needs the pretrained generator and VRE (the LoRA fits SD 2.1-base)")
    sources: dict[str, dict[str, Any]] = {}

    def src(part: str, entry: str) -> str:
        # where the part is loaded from on this machine: kept in memory only; a saved folder names it by registry
        # name and content hash (honestface.models.folder_sources)
        path = str(source_path(entry, weights.get(entry)))
        sources[part] = {"weights": entry, "path": path}
        return path

    with _seeded(seed):
        if "generator" in load:
            gen = OneStepGenerator.from_sd(src("generator", "sd21_base"), **generator_options)
        else:
            gen = OneStepGenerator.from_configs({**spec["unet"], **(unet or {})}, {**spec["vae"], **(vae or {})},
                                                SD21_SCHEDULER_CONFIG, **generator_options)
        if vae_path is not None:
            from diffusers import AutoencoderKL

            gen.vae = AutoencoderKL.from_pretrained(vae_path).requires_grad_(False).eval()
        ctx = int(gen.unet.config.cross_attention_dim)
        disc = LatentDiscriminator.from_unet(gen.unet, gen.scheduler_config, **(discriminator or {})) \
            if with_discriminator else None
        if vre_path is not None:
            vre_model = VisualRepresentationEmbedder.from_pretrained(vre_path)
        elif "vre" in load:
            proj = resolve_weight("osdface_lora", weights.get("osdface_lora")) if osdface_weights else None
            vre_model = VisualRepresentationEmbedder.from_osdface(src("vre", "osdface_vre"), proj, **(vre or {}))
        else:
            extra = {"input_transform": "osdface", "input_size": 512} if spec["vre"] == "osdface" else {}
            vre_model = VisualRepresentationEmbedder.from_preset(spec["vre"],
                                                                 **{"out_dim": ctx, **extra, **(vre or {})})
        if osdface_weights:
            gen.load_osdface_lora(resolve_weight("osdface_lora", weights.get("osdface_lora")))
        parts: dict[str, Any] = {}
        if use_ide:
            if "identity_backbone" in load:
                ident = IdentityBackbone.from_weights(identity_weights, src("identity_backbone", identity_weights))
            elif spec["iresnet"]:
                from honestface.face.iresnet import IResNet

                ident = IdentityBackbone(IResNet.from_preset(spec["iresnet"]))
            else:
                ident = IdentityBackbone.tiny(id_dim=spec["id_dim"])
            if "image_backbone" in load:
                image = ImageTokenBackbone.from_weights(src("image_backbone", "clip_vit_h14_vision"),
                                                        layer=image_layer)
            else:
                image = ImageTokenBackbone.from_config(dict(spec["clip"]), layer=image_layer)
            fie = FaceIdentityEncoder.from_preset(spec["ide"], **{"id_dim": ident.id_dim, "out_dim": ctx,
                                                                   **(face_identity_encoder or {})})
            ffe = FacialFeatureExtractor.from_preset(spec["ide"], **{"token_dim": image.hidden_size, "out_dim": ctx,
                                                                      **(facial_feature_extractor or {})})
            fus = FeatureFusion.from_preset(name, **{"dim": ctx, "num_vre_tokens": vre_model.config.num_tokens,
                                                     "num_id_tokens": fie.config.num_tokens,
                                                     "num_feature_tokens": ffe.config.num_queries, **(fusion or {})})
            parts = {"face_identity_encoder": fie, "facial_feature_extractor": ffe, "fusion": fus,
                     "identity_backbone": ident, "image_backbone": image}
    native = {**spec["native"], **({} if resolution is None else {"resolution": int(resolution)}),
              **({} if resize is None else {"resize": resize})}
    return {"generator": gen, "vre": vre_model, "discriminator": disc, "sources": sources, "native": native, **parts}
