"""HonestFace's folder format: what `HonestFace.save_pretrained` writes and `HonestFace.from_pretrained` reads.

Files (our format): `honestface_config.json` (component configs, native settings, the frozen parts the folder does
not hold, by registry name and content hash, never a local path: `folder_sources.py`), `pytorch_lora_weights.safetensors` (diffusers/OSDFace LoRA layout),
`honestface_modules.safetensors` (projection, IDE heads, fusion, discriminator head), and, only for frozen parts
without an external source (random tiny models), `frozen.safetensors`. Writing is atomic (`honestface.models.folder`).
This module builds the parts; the composite (`honestface.models.honestface`) imports it, never the reverse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from honestface.models.discriminator import LatentDiscriminator
from honestface.models.face_identity_encoder import FaceIdentityEncoder, IdentityBackbone
from honestface.models.facial_feature_extractor import FacialFeatureExtractor, ImageTokenBackbone
from honestface.models.folder import read_folder_config
from honestface.models.folder_sources import resolve_folder_sources, source_record
from honestface.models.fusion import FeatureFusion
from honestface.models.generator import LORA_FILE, OneStepGenerator
from honestface.models.loading import empty_weights, load_into, read_safetensors
from honestface.models.vre import VisualRepresentationEmbedder

__all__ = ["CONFIG_FILE", "FAMILY_FILES", "FROZEN_FILE", "MODULES_FILE", "TRAINABLE", "generator_architecture",
           "identity_backbone_spec", "image_backbone_spec", "load_honestface_parts", "plain_config", "saved_sources"]

CONFIG_FILE = "honestface_config.json"
MODULES_FILE = "honestface_modules.safetensors"
FROZEN_FILE = "frozen.safetensors"
FAMILY_FILES = (CONFIG_FILE, MODULES_FILE, FROZEN_FILE, LORA_FILE)  # every file a HonestFace folder may hold
TRAINABLE = ("face_identity_encoder", "facial_feature_extractor", "fusion")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def plain_config(config: Any) -> dict[str, Any]:
    """A diffusers/transformers config as a JSON-ready dict (no `_` keys, tuples as lists)."""
    return _plain(dict(config))


def generator_architecture(generator: OneStepGenerator) -> dict[str, Any]:
    return {"unet_config": plain_config(generator.unet.config), "vae_config": plain_config(generator.vae.config),
            "scheduler_config": _plain(generator.scheduler_config)}


def identity_backbone_spec(backbone: IdentityBackbone) -> dict[str, Any]:
    """The architecture of an iResNet identity backbone (to rebuild it when saved in the folder); any other
    recogniser (e.g. dlib's) must come from its weights source, so only its border value is recorded."""
    net = backbone.net
    if not all(hasattr(net, a) for a in ("layers", "widths", "num_features")):
        return {"border_value": backbone.border_value}
    return {"layers": list(net.layers), "widths": list(net.widths), "num_features": int(net.num_features),
            "border_value": backbone.border_value}


def image_backbone_spec(backbone: ImageTokenBackbone) -> dict[str, Any]:
    return {"config": _plain(backbone.model.config.to_diff_dict()), "layer": backbone.layer,
            "mean": backbone.mean.flatten().tolist(), "std": backbone.std.flatten().tolist()}


def saved_sources(sources: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """What the folder config records for a model's `sources` (part -> {"weights", "path"}): part -> {"weights":
    registry name, "sha256": content hash}, hashing each part where it was loaded from (cached on disk)."""
    return {part: source_record(s["weights"], s.get("path")) for part, s in sources.items()}


def _take(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_honestface_parts(folder: Path, weights: dict[str, Any], with_discriminator: bool | None = None,
                          strict_names: set[str] | None = None, dtype: torch.dtype | None = None,
                          verify_sources: bool = True, channels_last: bool = False) -> dict[str, Any]:
    """The parts of a saved HonestFace folder as `HonestFace(**parts)` keyword arguments (the body of
    `HonestFace.from_pretrained`). Parts whose weights are all in the folder are built on the meta device and adopt
    the tensors read from it, cast to `dtype` while reading (`honestface.models.loading`): no random
    initialisation and no second copy of the UNet at the peak. Frozen parts it does not hold are found through
    the registry (`weights`, then $HONESTFACE_HOME) and, with `verify_sources`, checked against their recorded
    content hashes (`honestface.models.folder_sources`). `channels_last`: the folder's convolution weights are
    read straight into channels-last layout (`read_safetensors`)."""
    cfg = read_folder_config(folder, CONFIG_FILE, "honestface", "HonestFace")
    sources = cfg.get("sources", {})
    used = {s["weights"] for s in sources.values()}
    unknown = sorted(set(strict_names or ()) - used)
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a frozen part of this model; its weights: {', '.join(sorted(used))}")

    found = resolve_folder_sources(folder, sources, weights, verify=verify_sources)

    def path_of(part: str) -> str:
        return str(found[part])

    frozen = read_safetensors(folder / FROZEN_FILE, dtype, channels_last=channels_last) \
        if (folder / FROZEN_FILE).is_file() else {}
    modules = read_safetensors(folder / MODULES_FILE, dtype, channels_last=channels_last)
    options = {k: v for k, v in cfg["generator"].items() if not k.startswith("lora_")}
    if "generator" in sources:
        gen = OneStepGenerator.from_sd(path_of("generator"), weights_name=sources["generator"]["weights"],
                                       lora_rank=0, torch_dtype=dtype, **options)
        if options.get("train_base"):  # the trained base UNet replaces the external one
            load_into(gen.unet, _take(frozen, "generator.unet."), "the trained base UNet", folder, assign=True)
    else:
        arch = cfg["generator_architecture"]
        with empty_weights():
            gen = OneStepGenerator.from_configs(arch["unet_config"], arch["vae_config"], arch["scheduler_config"],
                                                lora_rank=0, **options)
        load_into(gen.unet, _take(frozen, "generator.unet."), "the UNet", folder, assign=True)
        load_into(gen.vae, _take(frozen, "generator.vae."), "the VAE", folder, assign=True)
    disc = None
    if cfg["discriminator"] is not None and with_discriminator is not False:
        d_cfg = {k: v for k, v in cfg["discriminator"].items() if k not in ("unet_config", "scheduler_config")}
        disc = LatentDiscriminator.from_unet(gen.unet, gen.scheduler_config, **d_cfg)
        load_into(disc, _take(modules, "discriminator."), "the discriminator", folder,
                  allow_missing=("backbone.",))
    g = cfg["generator"]
    if g["lora_rank"] > 0:
        gen.load_lora(folder / LORA_FILE, lora_alpha=g["lora_alpha"], lora_dropout=g["lora_dropout"])
        gen.lora_target_modules = list(g["lora_target_modules"])
    if "vre" in sources:
        vre = VisualRepresentationEmbedder.from_osdface(path_of("vre"), None, **cfg["vre"])
    else:  # built on the meta device like the UNet and the VAE: no random initialisation (0.3 s at SD size)
        with empty_weights():
            vre = VisualRepresentationEmbedder(**cfg["vre"])
        load_into(vre, _take(frozen, "vre."), "the VRE", folder, allow_missing=("projection.",), assign=True)
    vre.load_projection_state_dict(_take(modules, "vre.projection."), source=str(folder / MODULES_FILE))
    parts: dict[str, Any] = {}
    if cfg["use_ide"]:
        spec = cfg["identity_backbone"]
        if "identity_backbone" in sources:
            ident = IdentityBackbone.from_weights(sources["identity_backbone"]["weights"], path_of("identity_backbone"),
                                                  border_value=spec["border_value"])
        else:
            from honestface.face.iresnet import IResNet

            if "layers" not in spec:
                raise ValueError(f"{folder}: the identity backbone has no weights source and no iResNet architecture")
            with empty_weights():
                net = IResNet(spec["layers"], num_features=spec["num_features"], widths=spec["widths"])
                ident = IdentityBackbone(net, border_value=spec["border_value"])
            load_into(ident, _take(frozen, "identity_backbone."), "the identity backbone", folder, assign=True)
        spec = cfg["image_backbone"]
        kw = {"layer": spec["layer"], "mean": spec["mean"], "std": spec["std"]}
        if "image_backbone" in sources:
            image = ImageTokenBackbone.from_weights(path_of("image_backbone"), sources["image_backbone"]["weights"],
                                                    **kw)
        else:
            with empty_weights():
                image = ImageTokenBackbone.from_config(spec["config"], **kw)
            load_into(image, _take(frozen, "image_backbone."), "the image backbone", folder, assign=True)
        classes = {"face_identity_encoder": FaceIdentityEncoder, "facial_feature_extractor": FacialFeatureExtractor,
                   "fusion": FeatureFusion}
        for part in TRAINABLE:
            with empty_weights():
                parts[part] = classes[part](**cfg[part])
            load_into(parts[part], _take(modules, f"{part}."), part, folder, assign=True)
        parts.update(identity_backbone=ident, image_backbone=image)
    # folders saved before native settings were recorded: HonestFace's fallback (the VRE's size, OSDFace's resize
    # for OSDFace's VRE); never the VAE's sample_size
    del frozen, modules
    here = {part: {"weights": s["weights"], "path": path_of(part)} for part, s in sources.items()}
    return {"generator": gen, "vre": vre, "discriminator": disc, "sources": here, "native": cfg.get("native"),
            **parts}
