"""VSPBFR training: what the three stages share, and stage 1 (`vspbfr_diffuser`, the code diffuser).

Paper: Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration" (arXiv 2412.21042).
The paper's training details were not reachable; the recipe follows the released code (LonglongaaaGo/VSPBFR
`code_diffuser_train.py`, `restoration_train.py`; summary in docs/architecture.md#vspbfr). The
code is our own. Stage 0 (`vspbfr_encoder`) is in `vspbfr_encoder.py`, stage 2 (`vspbfr_restoration`) in
`vspbfr_restoration.py`. Every stage trains one part of a `VSPBFR` (built from `model.preset` + `model.params`
per-part overrides, or loaded from the `model.pretrained` folder of an earlier stage), freezes the others explicitly
(requires_grad False, eval mode) and exports the whole model folder (`VSPBFR.save_pretrained`, loadable by
`VSPBFR.from_pretrained`), so stage k + 1 sets `model.pretrained` to stage k's `<output_dir>/final`.

Stage 1, `vspbfr_diffuser` (code diffuser; style encoder and StyleGAN2 frozen, gradients flow through G to the
diffuser but G's parameters are not optimised), phase "code_diffuser":
    w0 = WPlusDiffusion.train_chain(diffuser, x_start, cond = E(LQ))   (x_{T-1} = q_sample(x_start), full chain)
    L = l1 * |w0 - E(HQ)| + lpips * LPIPS(G(w0), HQ) + id * ID(G(w0), HQ)
  Official quirks: the 0.1 LPIPS / ID factors are hard-coded there (its weight flags only switch the terms on): here
  they are the defaults of real weights; x_start is the LQ code (`x_start: lq_code`, default) or, as the paper's
  Fig. 2 suggests, the HQ code (`hq_code`); the official KD term (KL of temperature-0.15 softmaxes of w0 and E(HQ)
  over the *token* axis, batch mean) is computed but never added to the loss: we log it as `loss/kd` only.

All stages: HQ faces of `data.train_dir` (any nesting) at `data.resolution`, flipped with probability `hflip`
(official: 0.5), then degraded on the device by `degradation.preset` (the `vspbfr` preset; stages 0/1 officially use
no haze / gray: the configs set both to 0), image i of step s seeded by sample_seed(train.seed, index_i, s); every
other draw of a step (StyleGAN2 / restoration noise, diffusion start, z) is seeded by (train.seed, step). Images are
in [-1, 1] for the models. Not supported (clear error): `train.gradient_checkpointing`. Note for resumes: the
trainer checkpoints trainable parameters only, so the style encoder's BatchNorm running statistics (stage 0) restart
from the initial ones (training batches use batch statistics, so the optimisation itself continues exactly).

stage_params of `vspbfr_diffuser` (all optional; unknown keys and wrong types: one-line ValueError): l1_weight (1.0),
lpips_weight (0.1), id_weight (0.1), x_start ("lq_code" | "hq_code"), kd_temperature (0.15), hflip (0.5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from honestface.config import config_to_dict
from honestface.training.task import TrainingTask
from honestface.training.tasks.autoencoder import (
    FaceFolderData,
    build_identity,
    build_perceptual,
    check_weights,
    face_dataset,
    stage_params,
    unwrap,
)
from honestface.training.tasks.honestface import step_seed

DIFFUSER_DEFAULTS: dict[str, Any] = {"l1_weight": 1.0, "lpips_weight": 0.1, "id_weight": 0.1, "x_start": "lq_code",
                                     "kd_temperature": 0.15, "hflip": 0.5}
X_START = ("lq_code", "hq_code")
PART_NAMES = ("style_encoder", "stylegan", "code_diffuser", "restoration", "discriminator")


# ------------------------------------------------------------------------------------------ shared helpers
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
        model = VSPBFR.from_pretrained(cfg.model.pretrained)
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
        unwrap(module).model.save_pretrained(directory)


# -------------------------------------------------------------------------------------------------- stage 1
class DiffuserStageModule(nn.Module):
    """Stage 1: forward(batch, phase="code_diffuser") -> (loss, logs, carry), carry always empty."""

    def __init__(self, model: nn.Module, perceptual: nn.Module | None, identity: nn.Module | None,
                 params: dict[str, Any]) -> None:
        super().__init__()
        self.model, self.perceptual, self.identity, self.p = model, perceptual, identity, params
        self.train()

    def forward(self, batch: dict[str, Any], phase: str) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any]]:
        if phase != "code_diffuser":
            raise ValueError(f"unknown phase {phase!r} for the vspbfr_diffuser stage; allowed: code_diffuser")
        lq, hq, m, p = batch["lq_in"], batch["hq_in"], self.model, self.p
        with torch.no_grad():
            w_lq, w_hq = m.encode_lq(lq), m.encode_lq(hq)  # (B, n, D): condition and target
        x_start = w_lq if p["x_start"] == "lq_code" else w_hq
        w0 = m.diffusion.train_chain(m.code_diffuser, x_start, w_lq, generator=generator_for(batch, 1, lq.device))
        image = pool_to(m.stylegan(w0, generator=generator_for(batch, 2, lq.device)).image, hq.shape[-1])
        terms = {"l1": (w0.float() - w_hq.float()).abs().mean()}
        if self.perceptual is not None:
            terms["lpips"], _ = self.perceptual(image, hq)
        if self.identity is not None:
            terms["id"], _ = self.identity(image, hq)
        loss = sum(float(p[f"{k}_weight"]) * v for k, v in terms.items())
        with torch.no_grad():  # the official KD term: logged, never optimised
            t = float(p["kd_temperature"])
            kd = F.kl_div(F.log_softmax(w0.float() / t, dim=1), F.softmax(w_hq.float() / t, dim=1),
                          reduction="batchmean")
        logs = {f"loss/{k}": v.detach() for k, v in terms.items()}
        logs |= {"loss/kd": kd, "loss/code_diffuser": loss.detach()}
        return loss, logs, {}


class VSPBFRDiffuserTask(VSPBFRStageTask):
    """Stage 1: the code diffuser on frozen style-encoder codes, supervised by E(HQ) and G(w0) vs HQ."""

    name = "vspbfr_diffuser"
    defaults = DIFFUSER_DEFAULTS
    trained = ("code_diffuser",)

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        p = self.params
        self._module = DiffuserStageModule(self.model, build_perceptual(cfg, p["lpips_weight"]),
                                           build_identity(cfg, p["id_weight"]), p)

    def check_params(self, params: dict[str, Any]) -> None:
        if params["x_start"] not in X_START:
            raise ValueError(f"train.stage_params.x_start must be one of {', '.join(X_START)}, "
                             f"got {params['x_start']!r}")
        if params["kd_temperature"] <= 0:
            raise ValueError(f"train.stage_params.kd_temperature must be > 0, got {params['kd_temperature']}")

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"code_diffuser": list(self.model.code_diffuser.parameters())}

    def phases(self, step: int) -> list[str]:
        return ["code_diffuser"]

    @torch.no_grad()
    def images(self, module: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        model, lq = unwrap(module).model, batch["lq_in"]
        g = torch.Generator(lq.device).manual_seed(0)
        w_hat = model.encode_lq(lq)
        w0 = model.style_prompt(w_hat, generator=g)
        size = lq.shape[-1]
        return {"lq": lq, "inverted_lq": pool_to(model.stylegan(w_hat, generator=g).image, size),
                "prompt": pool_to(model.stylegan(w0, generator=g).image, size), "gt": batch["hq_in"]}
