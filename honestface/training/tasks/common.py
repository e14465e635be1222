"""What the training stages share: `train.stage_params` checks, loss builders, the face-folder data, seeding, and
the VSPBFR stages' model / degradation / export (`VSPBFRStageTask`).

The stage files are named after their `train.stage` (`vae.py`, `vre.py`, `honestface.py`, `vspbfr_encoder.py`,
`vspbfr_diffuser.py`, `vspbfr_restoration.py`); `TASKS` in `__init__.py` maps the names to the classes. Modules
reach a task's methods (`images`, `export`) already unwrapped from DDP by the trainer (`Accelerator.unwrap_model`).
VSPBFR facts (Lu et al., arXiv 2412.21042; the released LonglongaaaGo/VSPBFR trainers) are summarised in
docs/architecture.md#vspbfr; the seeding rules are docs/architecture.md's ("Training").
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from honestface.config import config_to_dict
from honestface.training.task import TrainingTask

# perceptual kind (without its "ea_" edge-aware prefix) -> (backbone weights, DISTS weights) in the weights registry
_WEIGHT_NAMES = {"dists": ("vgg16_imagenet", "dists_pyiqa"), "lpips_vgg": ("vgg16_imagenet", None),
                 "lpips_alex": ("alexnet_imagenet", None)}
PART_NAMES = ("style_encoder", "stylegan", "code_diffuser", "restoration", "discriminator")


# ------------------------------------------------------------------------------------ configuration and losses
def stage_params(cfg: DictConfig, stage: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """`train.stage_params` merged over `defaults`; an unknown key or a wrong type is a one-line ValueError."""
    given = OmegaConf.to_container(cfg.train.stage_params, resolve=True) or {}
    for key, value in given.items():
        if key not in defaults:
            raise ValueError(f"unknown train.stage_params key {key!r} for stage {stage!r}; allowed: "
                             f"{', '.join(sorted(defaults))}")
        want = defaults[key]
        ok = (value is None or want is None or isinstance(value, type(want))
              or (isinstance(want, float) and isinstance(value, int) and not isinstance(value, bool)))
        if not ok or (isinstance(want, (int, float)) and isinstance(value, bool)):
            kind = {int: "an int", float: "a number", dict: "a mapping", str: "a string"}.get(type(want), type(want))
            raise ValueError(f"train.stage_params.{key} must be {kind}, got {value!r}")
    return {**defaults, **given}


def check_weights(params: dict[str, Any], names: list[str]) -> None:
    for name in names:
        if params[name] < 0:
            raise ValueError(f"train.stage_params.{name} must be >= 0, got {params[name]}")


def build_identity(cfg: DictConfig, weight: float, model_backbone: nn.Module | None = None) -> nn.Module | None:
    """The identity loss of `loss.identity_network` (None when weight is 0): "auto" -> `model_backbone` when given,
    else ArcFace (an untrained tiny iResNet with `loss.networks=random`); "arcface"; "dlib" (bundled, pretrained)."""
    if weight == 0:
        return None
    from honestface.losses import IdentityLoss

    network = cfg.loss.identity_network
    if network == "auto":
        network = "model" if model_backbone is not None else "arcface"
    if network == "arcface" and cfg.loss.networks == "random":
        network = "random"
    path = cfg.weights.get("arcface_torch_r50") if network == "arcface" else None
    return IdentityLoss.build(network, path, backbone=model_backbone)


def build_perceptual(cfg: DictConfig, weight: float) -> nn.Module | None:
    """L_Per of kind `loss.perceptual_type` (None when weight is 0); `loss.networks=random` -> untrained networks,
    else the registry weights (paths from the `weights:` section win)."""
    if weight == 0:
        return None
    from honestface.losses import PerceptualLoss

    kind = str(cfg.loss.perceptual_type)
    if cfg.loss.networks == "random":
        return PerceptualLoss(kind=kind, random_init=True)
    backbone, dists = _WEIGHT_NAMES[kind.removeprefix("ea_")]
    return PerceptualLoss(kind=kind, weights=cfg.weights.get(backbone),
                          dists_weights=cfg.weights.get(dists) if dists else None)


def face_dataset(cfg: DictConfig, split: str) -> Dataset | None:
    """HQ faces of `data.train_dir` / `data.val_dir` at `data.resolution` (no degradation: tasks degrade on the
    device). The train folder is required; a missing val folder gives None."""
    from honestface.data.datasets import PairedFaceDataset

    root = cfg.data.train_dir if split == "train" else cfg.data.val_dir
    if root is None:
        if split == "train":
            raise ValueError(f"data.train_dir is not set: the {cfg.train.stage!r} stage trains on a folder of faces")
        return None
    if not Path(root).is_dir():
        raise FileNotFoundError(f"data.{split}_dir: no such folder: {root}")
    return PairedFaceDataset(root=root, resolution=int(cfg.data.resolution), seed=int(cfg.train.seed))


def to_model_range(batch: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A shallow copy of `batch` with `<key>_in` = batch[key] * 2 - 1 (dataset [0, 1] -> model [-1, 1])."""
    out = dict(batch)
    for key in keys:
        out[f"{key}_in"] = batch[key] * 2 - 1
    return out


# ---------------------------------------------------------------------------------------------------- data
class FaceFolderData:
    """The data methods of a task trained on one folder of HQ faces (`self._train`, built with `face_dataset`):
    shared by the VAE, VRE and VSPBFR stage tasks."""

    cfg: DictConfig
    _train: Dataset

    def train_dataset(self) -> Dataset:
        return self._train

    def val_dataset(self) -> Dataset | None:
        return face_dataset(self.cfg, "val")

    def collate(self) -> Callable[[list[dict]], dict]:
        from honestface.data.datasets import collate_faces

        return collate_faces


# ------------------------------------------------------------------------------------------------- seeding
def step_seed(seed: int, step: int, salt: int) -> int:
    """A 63-bit seed for the draws of one step (salt separates independent streams)."""
    from accelerate import PartialState

    from honestface.data.degradation import sample_seed

    return sample_seed(seed * 1009 + salt, PartialState().process_index, step)


# ------------------------------------------------------------------------------------------ VSPBFR stages
def r1_due(step: int, every: int) -> bool:
    """Lazy R1 schedule (StyleGAN2 / rosinality): regularise on steps 0, every, 2 * every, ... (every <= 0: never)."""
    return every > 0 and step % every == 0


def pool_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool (B, 3, S, S) StyleGAN2 output to (B, 3, size, size) (e4e's face_pool; S a multiple of size)."""
    return image if image.shape[-1] == size else F.adaptive_avg_pool2d(image, size)


def frozen_call(module: nn.Module, *args: Any) -> torch.Tensor:
    """module(*args) with its parameters detached: gradients reach the inputs, never the module's parameters."""
    params = {n: p.detach() for n, p in module.named_parameters()}
    return torch.func.functional_call(module, params, args)


def generator_for(batch: dict[str, Any], salt: int, device: torch.device) -> torch.Generator:
    """A generator on `device` for one independent stream of the step's draws."""
    return torch.Generator(device).manual_seed(int(batch["seed"]) + salt)


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Draws from the global RNG inside (dropout) seeded by `seed`; the outer RNG state is restored after. Makes the
    dropout of a step a function of that step's seed alone, whatever else used the global stream before it (the
    trainer's loader has its own generator, so starting or resuming an epoch does not move the global stream)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def check_probability(params: dict[str, Any], name: str) -> None:
    if not 0.0 <= params[name] <= 1.0:
        raise ValueError(f"train.stage_params.{name} must be in [0, 1], got {params[name]}")


def check_int(params: dict[str, Any], name: str, minimum: int, optional: bool = False) -> None:
    value = params[name]
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"train.stage_params.{name} must be an int >= {minimum}, got {value!r}")


def build_model(cfg: DictConfig, trained: tuple[str, ...], with_discriminator: bool = False):
    """The VSPBFR of `model.pretrained` or `model.preset` + `model.params`, with every part but `trained` frozen."""
    from honestface.models.vspbfr.discriminator import StyleGAN2Discriminator
    from honestface.models.vspbfr.vspbfr import VSPBFR, build_vspbfr

    params = config_to_dict(cfg.model.params)
    if cfg.model.pretrained:
        extra = sorted(set(params) - {"discriminator"})
        if extra:
            raise ValueError(f"model.params.{extra[0]} cannot change the pretrained VSPBFR folder "
                             f"{cfg.model.pretrained} (only model.params.discriminator, for a new discriminator)")
        model = VSPBFR.from_pretrained(cfg.model.pretrained, revision=cfg.model.revision)
        if with_discriminator and model.discriminator is None:
            rn = model.restoration.config
            kwargs = {"size": model.size, "channel_multiplier": rn.channel_multiplier, "channel_max": rn.channel_max,
                      **(params.get("discriminator") or {})}
            model.discriminator = StyleGAN2Discriminator(**kwargs)
            model._check_parts()
    else:
        model = build_vspbfr(cfg.model.preset or "full", with_discriminator=with_discriminator,
                             seed=int(cfg.train.seed), **params)
    model.frozen_parts = tuple(p for p in PART_NAMES if p not in trained)
    for name in PART_NAMES:
        part = getattr(model, name)
        if part is not None:
            part.requires_grad_(name in trained)
    return model.train(True)  # trained parts in train mode, frozen ones in eval mode


def degrade(degradation: Any, hq: torch.Tensor, index: Any, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """hq (B, 3, H, W) in [0, 1] -> (hq, grayed where the draw is gray (applied to LQ and GT, official); lq)."""
    from honestface.data.degradation import rgb_to_gray, sample_seed

    index = index.tolist() if isinstance(index, torch.Tensor) else list(index)
    with torch.no_grad():
        out = degradation(hq, seeds=[sample_seed(seed, int(i), step) for i in index])
    gray = out.params.get("gray")
    if gray is not None and bool(gray.any()):
        hq = torch.where(gray.bool().view(-1, 1, 1, 1).to(hq.device), rgb_to_gray(hq), hq)
    return hq, out.lq.clamp(0.0, 1.0)


class VSPBFRStageTask(FaceFolderData, TrainingTask):
    """What the three stages share: config checks, the model, data, degradation, seeding and the export."""

    name = "vspbfr"
    defaults: ClassVar[dict[str, Any]] = {}
    trained: tuple[str, ...] = ()
    with_discriminator = False

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        from honestface.data.degradation import Degradation

        if cfg.model.name != "vspbfr":
            raise ValueError(f"train.stage {self.name!r} trains VSPBFR: set model.name=vspbfr (got {cfg.model.name!r})")
        if cfg.train.gradient_checkpointing:
            raise ValueError(f"train.gradient_checkpointing is not supported by the {self.name!r} stage; set it false")
        self.params = stage_params(cfg, self.name, self.defaults)
        check_weights(self.params, [k for k in self.params if k.endswith("_weight")])
        check_probability(self.params, "hflip")
        self.check_params(self.params)
        self.degradation = Degradation(str(cfg.degradation.preset), **config_to_dict(cfg.degradation.params))
        self.model = build_model(cfg, self.trained, self.with_discriminator)
        self._train = face_dataset(cfg, "train")
        if int(cfg.data.resolution) > self.model.stylegan.size:
            raise ValueError(f"data.resolution {cfg.data.resolution} is larger than the StyleGAN2 output "
                             f"({self.model.stylegan.size}) of the VSPBFR model")

    def check_params(self, params: dict[str, Any]) -> None:
        """Stage-specific checks of `train.stage_params`, before anything is built."""

    @property
    def module(self) -> nn.Module:
        return self._module

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        """Flip, degrade on the device, map to [-1, 1]; `seed` of the step's other draws."""
        seed = int(self.cfg.train.seed)
        hq = batch["hq"]  # (B, 3, R, R) in [0, 1]
        if self.params["hflip"] > 0:
            g = torch.Generator().manual_seed(step_seed(seed, step, 11))
            flip = (torch.rand(hq.shape[0], generator=g) < self.params["hflip"]).to(hq.device)
            hq = torch.where(flip.view(-1, 1, 1, 1), hq.flip(-1), hq)
        hq, lq = degrade(self.degradation, hq, batch["index"], seed, step)
        return {"hq_in": hq * 2 - 1, "lq_in": lq * 2 - 1, "index": batch["index"], "seed": step_seed(seed, step, 12)}

    def export(self, module: nn.Module, directory: Path) -> None:
        """The whole VSPBFR folder (`VSPBFR.save_pretrained`) with this stage's trained part."""
        module.model.save_pretrained(directory)
