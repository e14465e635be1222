"""VSPBFR composite model: style encoder -> code diffuser -> StyleGAN2 feature bank -> restoration network.

Paper: Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration" (arXiv
2412.21042, Fig. 1). The inference chain follows the released code (LonglongaaaGo/VSPBFR `restoration_test.py`):
  1. w_hat = E(resize(LQ)) (B, n_latent_sg, D): the style encoder (e4e, 256 px input, + latent_avg);
  2. w0 = the code diffuser's deterministic T-step chain from Gaussian codes, conditioned on w_hat (the "visual style
     prompt");
  3. StyleGAN2(w0) with random noise -> the inverted image (average-pooled from stylegan_size to size) and the
     facial feature bank (the first StyledConv of every resolution);
  4. the restoration network G(LQ, w0[:, :n_latent], bank, z): its decoder uses the bank entries at 8 .. size px.
`VSPBFR_PRESETS["full"]` is the released configuration (StyleGAN2-FFHQ 1024 / W+ 18 x 512, IR-SE-50 encoder at 256,
code diffuser 18 x 512 with T = 4, restoration and discriminator at 512); "tiny" is a CPU test size. Native settings
(`native_settings`, `honestface.models.native`): the restoration size as the face resolution and the released test
loader's Lanczos resize (`dataset.py:ImageFolder_restore_test_no_gt`); recorded in the saved config.

Our choices:
- Randomness (diffusion start, StyleGAN2 and restoration noise injection, random codes z and the style-mixing draw)
  comes from a `torch.Generator`, or a list of them, one per sample: then every sample draws its own numbers in a
  fixed order (diffusion start, StyleGAN2 noise, z, restoration noise), so a face's output does not depend on its
  batch neighbours (noise injection is fed through forward pre-hooks on the NoiseInjection modules). With a list,
  style mixing is drawn per sample; with one generator, once per batch as in the official code. With a list the
  style encoder and the code diffuser chain also run one sample at a time: the denoiser's LayerNorm of an almost
  uniform channel attention amplifies tiny input differences (at random init, the ~1e-8 batch-size-dependent
  round-off of batched convs / matmuls in w_hat grew to O(1) differences in w0), while per sample w_hat and w0 are
  bit-identical whatever the batch. StyleGAN2 and the restoration network stay batched (their round-off stays small).
- `forward` runs steps 1-3 under `torch.no_grad()` (frozen at inference and in stage 2); the per-step methods keep
  gradients so the training stages can use them.
- `train(mode)` leaves the parts named in `frozen_parts` (default: style encoder, StyleGAN2, code diffuser) in eval
  mode; the training stages change `frozen_parts` for the part they train.
- Serialisation: one folder with `vspbfr_config.json` (format tag, each part's constructor arguments, the
  WPlusDiffusion kwargs, null discriminator when absent) and `vspbfr.safetensors` (every tensor, keys prefixed by
  the part name). `from_pretrained` builds on the meta device and assigns the loaded tensors (fast at full size).
- `from_official` maps the three released checkpoints (HF `Wanglong2/VSPBFR`: `style_encoder_decoder.pt`,
  `code_diffuser.pt`, `restoration_net.pt`) through the per-part loaders; missing files raise the weights
  registry's one-line error (registry names vspbfr_style_encoder, vspbfr_code_diffuser, vspbfr_restoration). The
  files hold the training scripts' extras (an argparse Namespace `args`, optimiser states), which the weights-only
  loader reads as plain data (`honestface.checkpoints.load_checkpoint`); the discriminator `d` is in the released
  layout (`encoder_convs.*`), mapped by `convert_official_discriminator_state_dict`.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import nn

from honestface.hub import PushToHubMixin
from honestface.models.folder import read_folder_config, save_model_folder, state_to_save
from honestface.models.native import NativeSettings
from honestface.models.vspbfr.code_diffuser import CodeDiffuser, WPlusDiffusion
from honestface.models.vspbfr.discriminator import StyleGAN2Discriminator
from honestface.models.vspbfr.layers import noise_hooks, sample_noise
from honestface.models.vspbfr.official import load_official_weights
from honestface.models.vspbfr.restoration_net import RestorationNetwork
from honestface.models.vspbfr.style_encoder import StyleEncoder
from honestface.models.vspbfr.stylegan2 import StyleGAN2Generator

__all__ = ["CONFIG_FILE", "FROZEN_PARTS", "PARTS", "VSPBFR", "VSPBFR_PRESETS", "WEIGHTS_FILE", "VSPBFROutput",
           "build_vspbfr", "is_vspbfr_folder", "sample_style_codes"]

CONFIG_FILE = "vspbfr_config.json"
WEIGHTS_FILE = "vspbfr.safetensors"
PARTS = ("style_encoder", "stylegan", "code_diffuser", "diffusion", "restoration", "discriminator")
MODULE_PARTS = ("style_encoder", "stylegan", "code_diffuser", "restoration", "discriminator")
FROZEN_PARTS = ("style_encoder", "stylegan", "code_diffuser")
_CLASSES: dict[str, type[nn.Module]] = {"style_encoder": StyleEncoder, "stylegan": StyleGAN2Generator,
                                        "code_diffuser": CodeDiffuser, "restoration": RestorationNetwork,
                                        "discriminator": StyleGAN2Discriminator}

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None

VSPBFR_PRESETS: dict[str, dict[str, Any]] = {
    "full": {  # the released model (vspbfr.md sections 1-7)
        "style_encoder": {"n_styles": 18, "style_dim": 512, "input_size": 256, "units": [3, 4, 14, 3],
                          "widths": [64, 128, 256, 512]},
        "stylegan": {"size": 1024, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2},
        "code_diffuser": {"n_tokens": 18, "dim": 512, "n_blocks": 4, "num_timesteps": 4},
        "diffusion": {"num_timesteps": 4, "beta_start": 0.1, "beta_end": 0.99, "schedule": "scaled_linear"},
        "restoration": {"size": 512, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "code_dim": 1024,
                        "dropout": 0.5},
        "discriminator": {"size": 512, "channel_multiplier": 2},
    },
    "tiny": {  # CPU tests: StyleGAN2 64 px (W+ 10 x 32), restoration 32 px
        "style_encoder": {"n_styles": 10, "style_dim": 32, "input_size": 64, "units": [1, 1, 1, 1],
                          "widths": [8, 16, 16, 32]},
        "stylegan": {"size": 64, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 16},
        "code_diffuser": {"n_tokens": 10, "dim": 32, "n_blocks": 4, "num_timesteps": 4},
        "diffusion": {"num_timesteps": 4, "beta_start": 0.1, "beta_end": 0.99, "schedule": "scaled_linear"},
        "restoration": {"size": 32, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 16,
                        "code_dim": 32, "dropout": 0.5},
        "discriminator": {"size": 32, "channel_multiplier": 2, "channel_max": 16},
    },
}


@dataclass
class VSPBFROutput(BaseOutput):
    """image: restored (B, 3, size, size), about [-1, 1]; w0: the visual style prompt (B, n_latent_sg, D);
    w_hat: the style encoder's code (B, n_latent_sg, D); inverted: G(w0) pooled to (B, 3, size, size)."""

    image: torch.Tensor
    w0: torch.Tensor
    w_hat: torch.Tensor
    inverted: torch.Tensor


def is_vspbfr_folder(folder: str | os.PathLike) -> bool:
    """True when `folder` holds a `VSPBFR.save_pretrained` config file."""
    return (Path(folder) / CONFIG_FILE).is_file()


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(preset: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown VSPBFR part(s) {', '.join(unknown)}; allowed: {', '.join(PARTS)}")
    out = copy.deepcopy(dict(preset))
    for part, kwargs in overrides.items():
        if kwargs is None and part == "discriminator":
            out[part] = None
            continue
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"override of VSPBFR part {part!r} must be a dict of constructor arguments, "
                             f"got {type(kwargs).__name__}")
        out[part] = {**(out.get(part) or {}), **kwargs}
    return out


def _preset(name: str) -> dict[str, Any]:
    if name not in VSPBFR_PRESETS:
        raise ValueError(f"unknown VSPBFR preset {name!r}; allowed: {', '.join(VSPBFR_PRESETS)}")
    return copy.deepcopy(VSPBFR_PRESETS[name])


class VSPBFR(PushToHubMixin, nn.Module):
    """The four VSPBFR networks (+ the stage-2 discriminator) and the inference chain (see the module docstring).

    Build with `build_vspbfr(preset)`, `VSPBFR.from_config(config)`, `from_pretrained(folder)` or
    `from_official(...)`; `forward(lq)` restores (B, 3, size, size) faces in [-1, 1].
    """

    def __init__(self, style_encoder: StyleEncoder, stylegan: StyleGAN2Generator, code_diffuser: CodeDiffuser,
                 restoration: RestorationNetwork, diffusion: Mapping[str, Any] | None = None,
                 discriminator: StyleGAN2Discriminator | None = None,
                 frozen_parts: Sequence[str] = FROZEN_PARTS,
                 native: NativeSettings | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.style_encoder, self.stylegan, self.code_diffuser = style_encoder, stylegan, code_diffuser
        self.restoration, self.discriminator = restoration, discriminator
        self.diffusion_kwargs = dict(diffusion if diffusion is not None else VSPBFR_PRESETS["full"]["diffusion"])
        self.diffusion = WPlusDiffusion(**self.diffusion_kwargs)
        self._check_parts()
        if native is None:
            native = NativeSettings(restoration.size, "lanczos")
        elif isinstance(native, Mapping):
            native = NativeSettings.from_dict(dict(native))
        if native.resolution != restoration.size or native.timestep is not None:
            raise ValueError(f"VSPBFR works at its restoration size {restoration.size} with no timestep; got native "
                             f"settings {native.to_dict()}")
        self.native_settings = native
        self.frozen_parts = tuple(frozen_parts)
        self.train(False)

    def _check_parts(self) -> None:
        sg, enc, cd, rn = self.stylegan, self.style_encoder, self.code_diffuser, self.restoration
        problems = []
        if (enc.n_styles, enc.style_dim) != (sg.n_latent, sg.style_dim):
            problems.append(f"style encoder codes ({enc.n_styles}, {enc.style_dim}) != StyleGAN2 W+ "
                            f"({sg.n_latent}, {sg.style_dim})")
        if (cd.n_tokens, cd.dim) != (sg.n_latent, sg.style_dim):
            problems.append(f"code diffuser codes ({cd.n_tokens}, {cd.dim}) != StyleGAN2 W+ "
                            f"({sg.n_latent}, {sg.style_dim})")
        if cd.num_timesteps != self.diffusion.num_timesteps:
            problems.append(f"code diffuser num_timesteps {cd.num_timesteps} != diffusion num_timesteps "
                            f"{self.diffusion.num_timesteps}")
        if rn.size > sg.size or rn.style_dim != sg.style_dim:
            problems.append(f"restoration (size {rn.size}, style_dim {rn.style_dim}) needs size <= StyleGAN2 size "
                            f"{sg.size} and style_dim {sg.style_dim}")
        bad = [r for r in rn.decoder_resolutions if r <= sg.size and rn.channels[r] != sg.channels[r]]
        if bad:
            problems.append("feature bank widths differ from the restoration decoder at "
                            + ", ".join(f"{r} px ({sg.channels[r]} vs {rn.channels[r]})" for r in bad))
        if self.discriminator is not None and self.discriminator.size != rn.size:
            problems.append(f"discriminator size {self.discriminator.size} != restoration size {rn.size}")
        if problems:
            raise ValueError("inconsistent VSPBFR parts: " + "; ".join(problems))

    # ------------------------------------------------------------------------------------------ properties
    @property
    def size(self) -> int:
        """Working (restoration) resolution."""
        return self.restoration.size

    @property
    def stylegan_size(self) -> int:
        return self.stylegan.size

    @property
    def n_latent(self) -> int:
        """Rows of the W+ codes w_hat / w0 (StyleGAN2's n_latent)."""
        return self.stylegan.n_latent

    @property
    def device(self) -> torch.device:
        return next(self.restoration.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.restoration.parameters()).dtype

    def train(self, mode: bool = True) -> VSPBFR:
        """Set `mode` on every part except those in `frozen_parts`, which stay in eval mode."""
        super().train(mode)
        for name in getattr(self, "frozen_parts", FROZEN_PARTS):
            part = getattr(self, name, None)
            if part is not None:
                part.train(False)
        return self

    def config_dict(self) -> dict[str, Any]:
        """What `save_pretrained` writes to vspbfr_config.json."""
        cfg: dict[str, Any] = {"format": "vspbfr", "version": 1, "diffusion": dict(self.diffusion_kwargs),
                               "native": self.native_settings.to_dict()}
        for name in MODULE_PARTS:
            part = getattr(self, name)
            cfg[name] = None if part is None else _plain(dict(part.config))
        return cfg

    # ------------------------------------------------------------------------------------------- the chain
    def encode_lq(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> w_hat (B, n_latent, D) (resized to the encoder's input inside)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"VSPBFR.encode_lq: images must be (B, 3, H, W), got {tuple(images.shape)}")
        return self.style_encoder(images)

    def style_prompt(self, w_hat: torch.Tensor, generator: GeneratorArg = None) -> torch.Tensor:
        """w_hat (B, n_latent, D) -> w0 (B, n_latent, D) by the deterministic reverse chain from Gaussian codes."""
        if not _is_list(generator):
            return self.diffusion.sample(self.code_diffuser, w_hat, generator=generator)
        _check_generators(generator, w_hat.shape[0])
        out = []
        for b, g in enumerate(generator):  # one sample at a time: see the module docstring
            noise = sample_noise((1, *w_hat.shape[1:]), generator=g, device=w_hat.device, dtype=w_hat.dtype)
            out.append(self.diffusion.sample(self.code_diffuser, w_hat[b:b + 1], noise=noise))
        return torch.cat(out)  # (B, n_latent, D)

    def feature_bank(self, w0: torch.Tensor, generator: GeneratorArg = None
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """w0 (B, n_latent, D) -> (inverted image (B, 3, size, size), [(B, C_r, r, r) for r = 4 .. stylegan_size])."""
        with _per_sample_noise(self.stylegan, generator, w0.shape[0]):
            out = self.stylegan(w0, generator=None if _is_list(generator) else generator, return_features=True)
        return self._pool(out.image), out.features

    def _pool(self, image: torch.Tensor) -> torch.Tensor:
        factor = self.stylegan_size // self.size
        return image if factor == 1 else F.avg_pool2d(image, factor)  # (B, 3, size, size)

    def restore(self, lq: torch.Tensor, w0: torch.Tensor, bank: Sequence[torch.Tensor] | None,
                generator: GeneratorArg = None, mixing: float = 0.0) -> torch.Tensor:
        """The restoration network on lq (B, 3, size, size) with the prompt w0 and the bank -> (B, 3, size, size)."""
        if not _is_list(generator):
            return self.restoration(lq, w0, bank, generator=generator, mixing=mixing)
        _check_generators(generator, lq.shape[0])
        n, d = self.restoration.n_latent, self.restoration.style_dim
        z = torch.cat([sample_style_codes(g, mixing, n, d, lq.device, lq.dtype) for g in generator])  # (B, n, D)
        with _per_sample_noise(self.restoration, generator, lq.shape[0]):
            return self.restoration(lq, w0, bank, z=z)

    def forward(self, lq: torch.Tensor, generator: GeneratorArg = None, mixing: float = 0.0) -> VSPBFROutput:
        """Restore lq (B, 3, size, size) in [-1, 1]. `generator`: one torch.Generator, one per sample, or None.
        Steps 1-3 (frozen) run without gradients; call `.eval()` for reproducible outputs (dropout on c)."""
        if lq.ndim != 4 or tuple(lq.shape[1:]) != (3, self.size, self.size):
            raise ValueError(f"VSPBFR: lq must be (B, 3, {self.size}, {self.size}), got {tuple(lq.shape)}")
        if _is_list(generator):
            _check_generators(generator, lq.shape[0])
        with torch.no_grad():
            if _is_list(generator):  # per sample, see the module docstring
                w_hat = torch.cat([self.encode_lq(lq[b:b + 1]) for b in range(lq.shape[0])])
            else:
                w_hat = self.encode_lq(lq)  # (B, n_latent, D)
            w0 = self.style_prompt(w_hat, generator)  # (B, n_latent, D)
            inverted, bank = self.feature_bank(w0, generator)
        image = self.restore(lq, w0, bank, generator, mixing)  # (B, 3, size, size)
        return VSPBFROutput(image=image, w0=w0, w_hat=w_hat, inverted=inverted)

    # ----------------------------------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: Mapping[str, Any], device: torch.device | str | None = None) -> VSPBFR:
        """Build (random weights) from a config dict like `config_dict()` / a preset (`discriminator` None = none).

        `device="meta"` builds without allocating (to load weights with `assign=True`)."""
        missing = [p for p in PARTS if p != "discriminator" and not isinstance(config.get(p), Mapping)]
        if missing:
            raise ValueError(f"VSPBFR config lacks the part(s) {', '.join(missing)}")
        ctx = torch.device(device) if device is not None else contextlib.nullcontext()
        with ctx:
            parts = {name: _CLASSES[name](**dict(config[name])) for name in MODULE_PARTS
                     if config.get(name) is not None}
        return cls(diffusion=dict(config["diffusion"]), discriminator=parts.pop("discriminator", None),
                   native=config.get("native"), **parts)

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> VSPBFR:
        """Build a named configuration ("full" | "tiny") with random weights; options: `build_vspbfr`."""
        return build_vspbfr(name, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike, *, push_to_hub: bool = False, repo_id: str | None = None,
                        **hub_options: Any) -> Path:
        """Write `vspbfr_config.json` and `vspbfr.safetensors` (every part; the discriminator when present),
        atomically (`honestface.models.folder`); returns the folder. `push_to_hub=True` then uploads it with a
        generated model card to `repo_id` (default: the folder's name in your account; hub_options as in
        `honestface.hub.push_folder`)."""
        from safetensors.torch import save_file

        self._check_push(push_to_hub, repo_id, hub_options)

        def write_weights(tmp: Path) -> None:
            save_file(state_to_save(self.state_dict()), str(tmp / WEIGHTS_FILE), metadata={"format": "vspbfr"})

        out = save_model_folder(folder, CONFIG_FILE, self.config_dict(), write_weights, (CONFIG_FILE, WEIGHTS_FILE))
        return self._push_saved(out, push_to_hub, repo_id, hub_options)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, weights: Mapping[str, str | os.PathLike] | None = None,
                        with_discriminator: bool | None = None, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        local_files_only: bool = False) -> VSPBFR:
        """Load a `save_pretrained` folder. with_discriminator: None loads it when saved, False skips it, True
        requires it. The model is built on the meta device and takes the loaded tensors (no random init).
        `folder` may also be the released model name "vspbfr": its three checkpoints are found through the weights
        registry (`weights`: registry name -> path) and converted once into a cached folder in `dtype`
        (`honestface.models.released`); or a Hugging Face Hub id "org/name" at `revision`, fetched into the Hub
        cache (`cache_dir`, `token`, `local_files_only`; offline once cached: `honestface.hub`)."""
        from safetensors.torch import load_file

        from honestface.hub import resolve_model_dir
        from honestface.models.released import resolve_pretrained

        folder = resolve_model_dir(folder, family="vspbfr", revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=local_files_only)
        folder = resolve_pretrained(folder, "vspbfr", weights, dtype)
        config = read_folder_config(folder, CONFIG_FILE, "vspbfr", "VSPBFR model")
        if not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"VSPBFR model folder {folder} lacks {WEIGHTS_FILE}")
        if with_discriminator and config.get("discriminator") is None:
            raise ValueError(f"{folder} holds no discriminator (saved without one)")
        if with_discriminator is False:
            config = {**config, "discriminator": None}
        state = load_file(str(folder / WEIGHTS_FILE), device=str(device) if device is not None else "cpu")
        if config.get("discriminator") is None:
            state = {k: v for k, v in state.items() if not k.startswith("discriminator.")}
        model = cls.from_config(config, device="meta")
        from honestface.checkpoints import check_state_dict

        check_state_dict(model, state, str(folder / WEIGHTS_FILE), "the VSPBFR model of its config")
        model.load_state_dict(state, strict=True, assign=True)
        if dtype is not None:
            model.to(dtype=dtype)
        return model.train(False)

    @classmethod
    def from_official(cls, style_encoder_decoder: str | os.PathLike | None = None,
                      code_diffuser: str | os.PathLike | None = None, restoration: str | os.PathLike | None = None,
                      key: str = "g_ema", preset: str = "full", with_discriminator: bool = False,
                      overrides: Mapping[str, Mapping[str, Any]] | None = None) -> VSPBFR:
        """Build `preset` (+ `overrides`: part name -> constructor kwargs, as in `build_vspbfr`) and load the
        released checkpoints (weights-only loading).

        Paths default to the weights registry (`vspbfr_style_encoder`, `vspbfr_code_diffuser`,
        `vspbfr_restoration` under $HONESTFACE_HOME); a missing file raises MissingWeightError naming its config key.
        style_encoder_decoder.pt: {'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg'} -> style encoder and
        StyleGAN2 (rosinality keys under 'decoder.'); code_diffuser.pt: {'att_mapper'}; restoration_net.pt: {'g',
        'd', 'g_ema', 'g_optim', 'd_optim', 'args', 'ada_aug_p', 'iter'} -> `key` ('g_ema': the evaluation model)
        and, with_discriminator, 'd' (released `encoder_convs.*` keys or ours). To continue training from the
        released files, save the result (`save_pretrained`) and give that folder as `model.pretrained`.
        """
        from honestface.weights import resolve_weight

        paths = {"vspbfr_style_encoder": style_encoder_decoder, "vspbfr_code_diffuser": code_diffuser,
                 "vspbfr_restoration": restoration}
        files = {name: resolve_weight(name, path) for name, path in paths.items()}  # fail before building
        config = _merge(_preset(preset), overrides or {})
        if not with_discriminator:
            config["discriminator"] = None
        return load_official_weights(cls.from_config(config), files, key, with_discriminator).train(False)


def build_vspbfr(preset: str = "tiny", *, with_discriminator: bool = False, seed: int | None = 0,
                 **overrides: Mapping[str, Any]) -> VSPBFR:
    """A VSPBFR with random weights from `preset`, each part's kwargs updated by `overrides[part]`, e.g.
    `build_vspbfr("tiny", restoration={"code_dim": 64})`. `seed` fixes the initialisation (global RNG untouched)."""
    config = _merge(_preset(preset), overrides)
    if not with_discriminator:
        config["discriminator"] = None
    if seed is None:
        return VSPBFR.from_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return VSPBFR.from_config(config)


# ------------------------------------------------------------------------------------ per-sample randomness
def sample_style_codes(generator: torch.Generator, mixing: float, n: int, dim: int,
                       device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """One sample's Gaussian codes z (1, n, dim) for the restoration network, drawn from `generator` in a fixed
    order: the mixing draw (only when mixing > 0), one or two N(0, I) codes (1, 1, dim), the crossover in [1, n - 1];
    with probability `mixing` the two codes are switched at the crossover, else one code fills every row. Shared by
    `VSPBFR.restore` and the ONNX runtime (`honestface.export`), so both draw the same numbers."""
    if not 0.0 <= mixing <= 1.0:
        raise ValueError(f"mixing must be a probability in [0, 1], got {mixing}")
    mix = mixing > 0 and float(torch.rand((), generator=generator, device=generator.device)) < mixing
    z = sample_noise((2 if mix else 1, 1, 1, dim), generator=generator, device=device, dtype=dtype)
    if not mix:
        return z[0].expand(1, n, dim)
    cut = int(torch.randint(1, n, (1,), generator=generator, device=generator.device))
    return torch.cat([z[0].expand(1, cut, dim), z[1].expand(1, n - cut, dim)], dim=1)


def _is_list(generator: GeneratorArg) -> bool:
    return isinstance(generator, (list, tuple))


def _check_generators(generators: Sequence[torch.Generator], batch: int) -> None:
    if len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for a batch of {batch} (one per sample)")


@contextlib.contextmanager
def _per_sample_noise(module: nn.Module, generator: GeneratorArg, batch: int) -> Iterator[None]:
    """While active, every NoiseInjection of `module` called without explicit noise gets (B, 1, H, W) noise whose
    row b is drawn from generator[b] (nothing changes when `generator` is not a list)."""
    if not _is_list(generator):
        yield
        return
    _check_generators(generator, batch)

    def hook(_: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        image = args[0] if args else kwargs["image"]
        if kwargs.get("noise") is not None or len(args) > 1:
            return args, kwargs
        h, w = image.shape[-2:]
        noise = torch.cat([sample_noise((1, 1, h, w), generator=g, device=image.device, dtype=image.dtype)
                           for g in generator])  # (B, 1, H, W)
        return args, {**kwargs, "noise": noise}

    with noise_hooks(module, hook):
        yield
