"""One-step LoRA UNet generator of HonestFace / OSDFace: `z_L -> eps -> z_hat -> x_hat` in a single UNet call.

Paper component: the trainable UNet `eps_theta` of the HonestFace pipeline figure (arXiv 2505.18469) between the
frozen SD VAE encoder `E_phi` and decoder `D_phi`. The numbers follow the authors' released OSDFace inference code
(github.com/jkwang28/OSDFace `infer.py`, HEAD 0652227), see docs/architecture.md:

- base model Stable Diffusion 2.1-base (diffusers layout `unet/`, `vae/`, `scheduler/`; registry entry `sd21_base`);
- the LQ latent `z_L = E(x_L) * scaling_factor` (OSDFace *samples* the posterior) is used directly as `x_t` at the
  fixed timestep t = 399, with no noise added;
- `z_hat = (z_L - sqrt(1 - abar_t) * eps) / sqrt(abar_t)`, computed in float64 from the scheduler's `alphas_cumprod`
  (abar_399 ~= 0.4261 for SD 2.1-base);
- `x_hat = clamp(D(z_hat / scaling_factor), -1, 1)`;
- UNet LoRA rank 16, alpha 16 on linear and conv layers; the VAE is frozen.

Our choices (the papers do not state them): the default LoRA target list (attention, feed-forward, transformer in/out
projections and the resnet convs; the OSDFace file's exact list is unknown, so `load_lora` re-targets the adapter to
whatever modules a file holds); `prediction_type="v_prediction"` support (x0 = sqrt(abar) x_t - sqrt(1 - abar) v) for
v-models such as SD 2.1-768; `encode_mode` ("sample" as OSDFace, or "mode" for deterministic runs); `eps` is always
returned as a noise prediction (converted from v for v-models).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from torch import nn

__all__ = [
    "DEFAULT_LORA_TARGETS", "OneStepGenerator", "normalize_lora_state_dict", "one_step_x0", "scheduler_alphas_cumprod",
]

DEFAULT_LORA_TARGETS: tuple[str, ...] = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut",
)
PREDICTION_TYPES = ("epsilon", "v_prediction")
ENCODE_MODES = ("sample", "mode")
LORA_FILE = "pytorch_lora_weights.safetensors"


def scheduler_alphas_cumprod(scheduler_config: dict[str, Any] | None = None) -> torch.Tensor:
    """`alphas_cumprod` of a diffusers scheduler config as float64 (computed by diffusers in float32, like OSDFace)."""
    config = {k: v for k, v in (scheduler_config or {}).items() if not k.startswith("_")}
    if not config:  # SD 2.1-base values
        config = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear"}
    with torch.device("cpu"):  # also under a `with torch.device("meta")` model build
        return DDIMScheduler.from_config(config).alphas_cumprod.to(torch.float64)


def one_step_x0(x_t: torch.Tensor, model_output: torch.Tensor, alpha_bar: float | torch.Tensor,
                prediction_type: str = "epsilon") -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and clean-sample estimates `(eps, x0)` from one model output at `abar_t`, computed in float64.

    epsilon: x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar).  v: x0 = sqrt(abar) x_t - sqrt(1 - abar) v and
    eps = sqrt(1 - abar) x_t + sqrt(abar) v. Both results are cast back to `x_t.dtype`.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    a = torch.as_tensor(alpha_bar, dtype=torch.float64, device=x_t.device)
    sa, s1a = a.sqrt(), (1.0 - a).sqrt()
    x, out = x_t.double(), model_output.double()
    if prediction_type == "epsilon":
        eps, x0 = out, (x - s1a * out) / sa
    else:
        eps, x0 = s1a * x + sa * out, sa * x - s1a * out
    return eps.to(x_t.dtype), x0.to(x_t.dtype)


_LEGACY_LORA = (  # older diffusers / attention-processor LoRA names -> peft names
    (re.compile(r"\.processor\."), "."),
    (re.compile(r"\.to_out_lora\.(up|down)\."), r".to_out.0.lora_\1."),
    (re.compile(r"_lora\.(up|down)\."), r".lora_\1."),  # to_q_lora.up -> to_q.lora_up
    (re.compile(r"\.lora(?:_linear_layer|_layer)?\.(up|down)\."), r".lora_\1."),
    (re.compile(r"\.lora_up\."), ".lora_B."),
    (re.compile(r"\.lora_down\."), ".lora_A."),
)


def normalize_lora_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                            dict[str, float]]:
    """UNet LoRA tensors in peft naming `<module>.lora_A.weight` / `<module>.lora_B.weight`, plus per-module alphas.

    Accepts the diffusers/peft layout (optionally prefixed `unet.` or `base_model.model.`, as OSDFace's
    `pytorch_lora_weights.safetensors`), and the legacy `lora.up`/`lora.down`, `to_q_lora.up` processor layouts.
    Keys `<module>.alpha` (kohya-style network alphas) are returned separately.
    """
    out: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for key, value in state_dict.items():
        k = key
        for prefix in ("unet.", "base_model.model."):
            k = k.removeprefix(prefix)
        if k.endswith(".alpha"):
            alphas[k[: -len(".alpha")]] = float(value)
            continue
        for pattern, repl in _LEGACY_LORA:
            k = pattern.sub(repl, k)
        k = re.sub(r"\.lora_([AB])\.[^.]+\.weight$", r".lora_\1.weight", k)  # drop an adapter name
        if not re.search(r"\.lora_[AB]\.weight$", k):
            raise ValueError(f"not a UNet LoRA tensor: {key!r} (expected <module>.lora_A.weight / lora_B.weight)")
        out[k] = value
    return out, alphas


def _lora_modules(peft_state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Module name -> LoRA rank of a normalised LoRA state dict (checks that A and B come in pairs)."""
    ranks: dict[str, int] = {}
    for key, value in peft_state.items():
        module, kind = key.rsplit(".lora_", 1)
        if kind.startswith("A"):
            other = f"{module}.lora_B.weight"
            if other not in peft_state:
                raise ValueError(f"LoRA tensor {key!r} has no matching {other!r}")
            ranks[module] = int(value.shape[0])
    return ranks


class OneStepGenerator(nn.Module):
    """Frozen SD VAE + UNet with a peft LoRA adapter, run once at a fixed timestep.

    Args:
        unet, vae: diffusers models (the VAE is frozen here; the UNet's base weights are frozen, its LoRA trains).
        scheduler_config: the diffusers scheduler config giving `alphas_cumprod` (None: SD 2.1-base betas).
        timestep: the fixed t (OSDFace: 399). prediction_type: "epsilon" | "v_prediction".
        encode_mode: "sample" (posterior sample, OSDFace) | "mode" (posterior mean, deterministic).
        lora_rank, lora_alpha, lora_target_modules, lora_dropout: the adapter (rank 0 = no adapter).
        train_base: also train the UNet's base weights (ours, for the small-scale recipe: a randomly initialised UNet
            has no prior worth protecting with a low-rank adapter). Off for the paper recipe.
    """

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL,
                 scheduler_config: dict[str, Any] | None = None, *,
                 timestep: int = 399, prediction_type: str = "epsilon", encode_mode: str = "sample",
                 lora_rank: int = 16, lora_alpha: float = 16.0,
                 lora_target_modules: Sequence[str] = DEFAULT_LORA_TARGETS, lora_dropout: float = 0.0,
                 train_base: bool = False) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if encode_mode not in ENCODE_MODES:
            raise ValueError(f"encode_mode must be one of {ENCODE_MODES}, got {encode_mode!r}")
        self.scheduler_config = {k: v for k, v in (scheduler_config or {}).items() if not k.startswith("_")}
        # a plain attribute, not a buffer: `.to(bfloat16)` must not round the float64 schedule
        self.alphas_cumprod = scheduler_alphas_cumprod(self.scheduler_config)
        if not 0 <= timestep < len(self.alphas_cumprod):
            raise ValueError(f"timestep must be in [0, {len(self.alphas_cumprod)}), got {timestep}")
        self.unet, self.vae = unet, vae
        self.timestep, self.prediction_type, self.encode_mode = int(timestep), prediction_type, encode_mode
        self.vae.requires_grad_(False).eval()
        self.unet.requires_grad_(False)
        self.lora_rank, self.lora_alpha, self.lora_dropout = 0, float(lora_alpha), float(lora_dropout)
        self.lora_target_modules: list[str] = list(lora_target_modules)
        if lora_rank > 0:
            self.add_lora(lora_rank, lora_alpha, lora_target_modules, lora_dropout)
        self.train_base = bool(train_base)
        if self.train_base:
            self._unfreeze_base()

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_sd(cls, path: str | os.PathLike | None = None, *, weights_name: str = "sd21_base",
                torch_dtype: torch.dtype | None = None, **options: Any) -> OneStepGenerator:
        """Load UNet, VAE and scheduler from a local diffusers SD folder (`path`, else the registry `weights_name`)."""
        from honestface.weights import resolve_weight

        root = Path(resolve_weight(weights_name, path))
        for sub in ("unet", "vae", "scheduler"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"{root} is not a diffusers SD folder: missing {sub}/ "
                                        f"(config key weights.{weights_name})")
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=torch_dtype)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=torch_dtype)
        sched = dict(DDIMScheduler.load_config(root, subfolder="scheduler"))
        options.setdefault("prediction_type", sched.get("prediction_type", "epsilon"))
        return cls(unet, vae, sched, **options)

    @classmethod
    def from_configs(cls, unet_config: dict[str, Any], vae_config: dict[str, Any],
                     scheduler_config: dict[str, Any] | None = None, **options: Any) -> OneStepGenerator:
        """Randomly initialised UNet and VAE from config dicts (tiny models for tests; seed with torch.manual_seed)."""
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        options.setdefault("prediction_type", (scheduler_config or {}).get("prediction_type", "epsilon"))
        return cls(unet, vae, scheduler_config, **options)

    @property
    def config(self) -> dict[str, Any]:
        """The generator options (JSON-serialisable)."""
        return {"timestep": self.timestep, "prediction_type": self.prediction_type, "encode_mode": self.encode_mode,
                "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
                "lora_target_modules": list(self.lora_target_modules), "lora_dropout": self.lora_dropout,
                "train_base": self.train_base}

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def alpha_bar(self, timestep: int | None = None) -> float:
        return float(self.alphas_cumprod[self.timestep if timestep is None else int(timestep)])

    # ---------------------------------------------------------------------------------------------- one step
    def encode(self, images: torch.Tensor, mode: str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> scaled latents (B, C, H/f, W/f). No graph unless `images` needs grad."""
        mode = mode or self.encode_mode
        if mode not in ENCODE_MODES:
            raise ValueError(f"encode mode must be one of {ENCODE_MODES}, got {mode!r}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and images.requires_grad):
            dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
            z = dist.sample(generator) if mode == "sample" else dist.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def denoise(self, z_t: torch.Tensor, prompt_embeds: torch.Tensor,
                timestep: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One UNet call at the fixed timestep with `z_t` (= z_L) as x_t. Returns (eps, z_hat), both like z_t."""
        t = self.timestep if timestep is None else int(timestep)
        out = self.unet(z_t.to(self.unet.dtype), t, encoder_hidden_states=prompt_embeds.to(self.unet.dtype)).sample
        return one_step_x0(z_t, out.to(z_t.dtype), self.alphas_cumprod[t], self.prediction_type)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images (B, 3, H, W) clamped to [-1, 1]."""
        z = latents / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(self.vae.dtype)).sample.clamp(-1.0, 1.0)

    def forward(self, lq: torch.Tensor, prompt_embeds: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
        """lq (B, 3, H, W) [-1, 1], prompt (B, L, D) -> (x_hat, z_hat, z_lq, eps)."""
        z_lq = self.encode(lq, generator=generator)  # (B, 4, H/8, W/8)
        eps, z_hat = self.denoise(z_lq, prompt_embeds)  # (B, 4, H/8, W/8) each
        return self.decode(z_hat), z_hat, z_lq, eps  # x_hat (B, 3, H, W)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def train(self, mode: bool = True) -> OneStepGenerator:
        super().train(mode)
        self.vae.eval()  # frozen
        return self

    # ---------------------------------------------------------------------------------------------------- LoRA
    def add_lora(self, rank: int, alpha: float | None = None,
                 target_modules: Sequence[str] | str = DEFAULT_LORA_TARGETS,
                 dropout: float = 0.0, rank_pattern: dict[str, int] | None = None,
                 alpha_pattern: dict[str, float] | None = None) -> None:
        """(Re)create the UNet LoRA adapter with gaussian-initialised A and zero B (the output starts unchanged)."""
        from peft import LoraConfig

        if rank <= 0:
            raise ValueError(f"LoRA rank must be > 0, got {rank}")
        self.remove_lora()
        config = LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), lora_dropout=dropout,
                            init_lora_weights="gaussian",
                            target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
                            rank_pattern=dict(rank_pattern or {}), alpha_pattern=dict(alpha_pattern or {}))
        try:
            self.unet.add_adapter(config)
        except ValueError as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"LoRA targets {target_modules!r} do not fit this UNet: {reason}") from None
        self.lora_rank, self.lora_alpha, self.lora_dropout = rank, float(config.lora_alpha), float(dropout)
        self.lora_target_modules = [target_modules] if isinstance(target_modules, str) else list(target_modules)
        if getattr(self, "train_base", False):
            self._unfreeze_base()

    def _unfreeze_base(self) -> None:
        """train_base: every UNet weight trains (peft freezes the base when it adds an adapter)."""
        for name, param in self.unet.named_parameters():
            if ".lora_" not in name:
                param.requires_grad_(True)

    def remove_lora(self) -> None:
        if self.has_lora:
            self.unet.unload_lora()
        self.lora_rank = 0

    @property
    def has_lora(self) -> bool:
        return bool(getattr(self.unet, "_hf_peft_config_loaded", False))

    def lora_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.unet.named_parameters() if ".lora_" in n]

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """LoRA tensors in peft naming `<module>.lora_A.weight` (no adapter name, no prefix)."""
        from peft.utils import get_peft_model_state_dict

        if not self.has_lora:
            return {}
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.unet).items()}

    def save_lora(self, path: str | os.PathLike) -> Path:
        """Write the LoRA as safetensors in the diffusers layout (`unet.` prefix, as OSDFace's file); a folder gets
        `pytorch_lora_weights.safetensors`. Rank, alpha and targets go into the file's metadata."""
        from safetensors.torch import save_file

        if not self.has_lora:
            raise ValueError("this generator has no LoRA adapter to save (lora_rank=0)")
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / LORA_FILE
        meta = {"lora_rank": str(self.lora_rank), "lora_alpha": str(self.lora_alpha),
                "lora_target_modules": json.dumps(self.lora_target_modules)}
        save_file({f"unet.{k}": v.contiguous() for k, v in self.lora_state_dict().items()}, str(path), metadata=meta)
        return path

    def load_lora(self, source: str | os.PathLike | dict[str, torch.Tensor], lora_alpha: float | None = None,
                  lora_dropout: float | None = None) -> None:
        """Load a UNet LoRA (safetensors file/folder, or a state dict) in peft or legacy naming.

        The adapter is re-created to target exactly the modules the file holds, with their ranks; alpha comes from
        `lora_alpha`, else the file's metadata or `<module>.alpha` keys, else the rank (scale 1).
        """
        meta: dict[str, str] = {}
        if isinstance(source, dict):
            raw = source
        else:
            from safetensors import safe_open

            path = Path(source)
            if path.is_dir():
                path = path / LORA_FILE
            if not path.is_file():
                raise FileNotFoundError(f"LoRA weights not found: {path}")
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                raw = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        state, alphas = normalize_lora_state_dict(raw)
        ranks = _lora_modules(state)
        if not ranks:
            raise ValueError(f"no LoRA tensors found in {source if not isinstance(source, dict) else 'state dict'}")
        own = {n for n, _ in self.unet.named_modules()}
        unknown = sorted(set(ranks) - own)
        if unknown:
            raise ValueError(f"LoRA file targets modules this UNet does not have, e.g. {unknown[0]!r}")
        rank = Counter(ranks.values()).most_common(1)[0][0]
        if lora_alpha is None and "lora_alpha" in meta:
            lora_alpha = float(meta["lora_alpha"])
        if lora_alpha is None and alphas:
            lora_alpha = Counter(alphas.values()).most_common(1)[0][0]
        exact = {m: f"^{re.escape(m)}$" for m in ranks}
        self.add_lora(rank, lora_alpha, target_modules="^(" + "|".join(re.escape(m) for m in sorted(ranks)) + ")$",
                      dropout=self.lora_dropout if lora_dropout is None else lora_dropout,
                      rank_pattern={exact[m]: r for m, r in ranks.items() if r != rank},
                      alpha_pattern={exact[m]: a for m, a in alphas.items() if m in exact and a != lora_alpha})
        from peft.utils import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.unet, state)
        unexpected = list(result.unexpected_keys)
        missing = [k for k in result.missing_keys if ".lora_" in k]
        if missing or unexpected:
            raise ValueError(f"LoRA weights do not match the adapter: {(missing or unexpected)[0]!r}")
        self.lora_target_modules = json.loads(meta["lora_target_modules"]) if "lora_target_modules" in meta \
            else sorted(ranks)

    def load_osdface_lora(self, path: str | os.PathLike | None = None, lora_alpha: float = 16.0) -> None:
        """Load OSDFace's released UNet LoRA (registry `osdface_lora`: `pytorch_lora_weights.safetensors`, r16/a16)."""
        from honestface.weights import resolve_weight

        self.load_lora(resolve_weight("osdface_lora", path), lora_alpha=lora_alpha)

    def merge_lora(self) -> None:
        """Fold the LoRA into the UNet weights for inference (W += alpha/r * B A); `unmerge_lora` undoes it."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        from honestface.models.loading import release_free_memory

        for module in self.unet.modules():
            if isinstance(module, BaseTunerLayer) and not module.merged:
                module.merge()
        release_free_memory()  # each merge replaced a weight; give the freed copies back to the system

    def unmerge_lora(self) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in self.unet.modules():
            if isinstance(module, BaseTunerLayer) and module.merged:
                module.unmerge()

    @property
    def lora_merged(self) -> bool:
        from peft.tuners.tuners_utils import BaseTunerLayer

        return any(isinstance(m, BaseTunerLayer) and m.merged for m in self.unet.modules())
