"""`vae` stage: a small SD-style KL autoencoder trained on HQ face crops, for the small-scale recipe.

Task: when no pretrained SD VAE fits (tiny or custom latent sizes), HonestFace's frozen VAE (arXiv 2505.18469,
inherited from SD 2.1 through OSDFace) is replaced by one trained here on the training faces. The objective is the
one of the latent-diffusion autoencoder (Rombach et al., CVPR 2022, "LPIPSWithDiscriminator"): L1 + perceptual +
KL, without its patch discriminator (our choice: a face-only VAE for small runs does not need it).

    loss = l1_weight * |x - x_rec|_1 + perceptual_weight * L_Per(x_rec, x) + kl_weight * KL(q(z|x) || N(0, I)) / (3 H W)

The KL is summed over the latent of each image and averaged over the batch, then divided by the number of image
values, which puts it on the per-value scale of the mean L1: with kl_weight = 1e-6 the balance is SD's (whose
reconstruction term is a per-image sum). The posterior is sampled during training (as SD).

`export` writes `<dir>/vae` with `AutoencoderKL.save_pretrained` (loadable by `AutoencoderKL.from_pretrained`).
Its `scaling_factor` is set to 1 / std of the posterior samples of the first `scaling_batches` training batches,
the rule SD used to get 0.18215 (latents of unit variance for the diffusion model). The generator uses it as
`z = E(x) * scaling_factor`.

stage_params (all optional): `vae` (AutoencoderKL config overrides of `TINY_VAE_CONFIG`), `l1_weight` (1.0),
`perceptual_weight` (0.1; kind `loss.perceptual_type`, untrained networks when `loss.networks=random`), `kl_weight`
(1e-6), `scaling_batches` (4). Faces come from `data.train_dir` (any nesting; `data.dataset` is not consulted:
this stage and `vre` read plain HQ faces). This module also holds the helpers the `vre` stage shares.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from honestface.training.task import TrainingTask

VAE_PHASE = "generator"
VAE_DEFAULTS: dict[str, Any] = {"vae": {}, "l1_weight": 1.0, "perceptual_weight": 0.1, "kl_weight": 1e-6,
                                "scaling_batches": 4}
_WEIGHT_NAMES = {"dists": ("vgg16_imagenet", "dists_pyiqa"), "lpips_vgg": ("vgg16_imagenet", None),
                 "lpips_alex": ("alexnet_imagenet", None)}


# ------------------------------------------------------------------------------------------ shared by the stages
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


def unwrap(module: nn.Module) -> nn.Module:
    """The task's own module inside DDP / torch.compile wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod
        else:
            return module


def to_model_range(batch: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A shallow copy of `batch` with `<key>_in` = batch[key] * 2 - 1 (dataset [0, 1] -> model [-1, 1])."""
    out = dict(batch)
    for key in keys:
        out[f"{key}_in"] = batch[key] * 2 - 1
    return out


# ------------------------------------------------------------------------------------------------- the VAE stage
def build_vae(overrides: dict[str, Any]):
    """A randomly initialised AutoencoderKL from `TINY_VAE_CONFIG` with `overrides` (names checked)."""
    from diffusers import AutoencoderKL

    from honestface.models.presets import TINY_VAE_CONFIG

    allowed = [p for p in inspect.signature(AutoencoderKL.__init__).parameters if p != "self"]
    bad = sorted(set(overrides) - set(allowed))
    if bad:
        raise ValueError(f"unknown AutoencoderKL option {bad[0]!r} in train.stage_params.vae; allowed: "
                         f"{', '.join(allowed)}")
    return AutoencoderKL(**{**TINY_VAE_CONFIG, **overrides})


class AutoencoderModule(nn.Module):
    """The VAE and its losses; forward(batch, phase="generator") -> (loss, logs, carry), carry always empty."""

    def __init__(self, vae: nn.Module, perceptual: nn.Module | None, l1_weight: float, perceptual_weight: float,
                 kl_weight: float) -> None:
        super().__init__()
        self.vae, self.perceptual = vae, perceptual
        self.l1_weight, self.perceptual_weight, self.kl_weight = l1_weight, perceptual_weight, kl_weight

    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, Any]:
        """x (B, 3, H, W) in [-1, 1] -> (reconstruction (B, 3, H, W), posterior q(z|x))."""
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample() if sample else posterior.mode()  # (B, C, h, w)
        return self.vae.decode(z).sample, posterior

    def forward(self, batch: dict[str, Any], phase: str = VAE_PHASE
                ) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        if phase != VAE_PHASE:
            raise ValueError(f"unknown phase {phase!r} for the vae stage; allowed: {VAE_PHASE}")
        x = batch["hq_in"]  # (B, 3, H, W) in [-1, 1]
        rec, posterior = self.reconstruct(x)
        l1 = F.l1_loss(rec.float(), x.float())
        mean, logvar = posterior.mean.float(), posterior.logvar.float()  # (B, C, h, w); KL in float32
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean() / x[0].numel()
        loss = self.l1_weight * l1 + self.kl_weight * kl
        logs: dict[str, Any] = {"loss/l1": l1.detach(), "loss/kl": kl.detach()}
        if self.perceptual is not None:
            per, _ = self.perceptual(rec, x)
            loss = loss + self.perceptual_weight * per
            logs["loss/perceptual"] = per.detach()
        logs["loss/vae"] = loss.detach()
        return loss, logs, {}


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


class AutoencoderTask(FaceFolderData, TrainingTask):
    """Train a small AutoencoderKL on HQ faces; export a diffusers VAE folder with a measured scaling factor."""

    name = "vae"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.params = p = stage_params(cfg, self.name, VAE_DEFAULTS)
        check_weights(p, ["l1_weight", "perceptual_weight", "kl_weight"])
        if p["scaling_batches"] < 1:
            raise ValueError(f"train.stage_params.scaling_batches must be >= 1, got {p['scaling_batches']}")
        vae = build_vae(dict(p["vae"] or {}))
        if cfg.train.gradient_checkpointing:
            vae.enable_gradient_checkpointing()
        self._module = AutoencoderModule(vae, build_perceptual(cfg, p["perceptual_weight"]), p["l1_weight"],
                                         p["perceptual_weight"], p["kl_weight"])
        self._train = face_dataset(cfg, "train")

    @property
    def module(self) -> nn.Module:
        return self._module

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {VAE_PHASE: [q for q in self._module.vae.parameters() if q.requires_grad]}

    def phases(self, step: int) -> list[str]:
        return [VAE_PHASE]

    def prepare_batch(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        return to_model_range(batch, ("hq",))  # adds hq_in (B, 3, H, W) in [-1, 1]

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        own = unwrap(module)
        x = batch["hq_in"] if "hq_in" in batch else batch["hq"] * 2 - 1
        rec, _ = own.reconstruct(x.to(own.vae.device, own.vae.dtype), sample=False)
        return {"hq": x, "reconstruction": rec.clamp(-1, 1)}

    @torch.no_grad()
    def latent_std(self, vae: nn.Module, seed: int = 0) -> float:
        """Std of posterior samples over the first `scaling_batches` batches of the training set (in order)."""
        from honestface.data.datasets import collate_faces

        loader = DataLoader(self._train, batch_size=int(self.cfg.data.batch_size), shuffle=False,
                            collate_fn=collate_faces, num_workers=0)
        gen = torch.Generator(device=vae.device).manual_seed(seed)
        total = total_sq = count = 0.0
        for i, batch in enumerate(loader):
            if i == self.params["scaling_batches"]:
                break
            x = batch["hq"].to(vae.device, vae.dtype) * 2 - 1  # (B, 3, H, W)
            z = vae.encode(x).latent_dist.sample(generator=gen).double()  # (B, C, h, w)
            total, total_sq, count = total + z.sum().item(), total_sq + (z * z).sum().item(), count + z.numel()
        var = total_sq / count - (total / count) ** 2
        if not var > 0:
            raise ValueError(f"latent variance is {var} over {int(count)} values: cannot set scaling_factor")
        return var ** 0.5

    def export(self, module: nn.Module, directory: Path) -> None:
        """Write `<directory>/vae` (diffusers AutoencoderKL folder) with scaling_factor = 1 / latent std."""
        vae = unwrap(module).vae
        was_training = vae.training
        vae.eval()
        try:
            scale = 1.0 / self.latent_std(vae, seed=int(self.cfg.train.seed))
        finally:
            vae.train(was_training)
        vae.register_to_config(scaling_factor=scale)
        vae.save_pretrained(Path(directory) / "vae", safe_serialization=True)
