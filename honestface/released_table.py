"""The released models honestface runs by name, and the lookup of their files (data and registry lookups only: no
torch, so command lines can check a name before any heavy import). Building and converting them is
`honestface.models.released`; each part is an entry of the weights registry (`honestface.weights_table`).

- "osdface": jkwang28/OSDFace (Wang et al., CVPR 2025): SD 2.1-base + the VRE of `associate_2.ckpt` + the UNet
  LoRA and VRE projection (`pytorch_lora_weights.safetensors`, `embedding_change_weights.pth`).
- "vspbfr": LonglongaaaGo/VSPBFR (Lu et al., Pattern Recognition 2025): `style_encoder_decoder.pt`,
  `code_diffuser.pt`, `restoration_net.pt` (Hugging Face Wanglong2/VSPBFR).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RELEASED_MODELS", "ReleasedModel", "is_released_name", "released_sources"]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ReleasedModel:
    """A released model: its library family ("honestface" | "vspbfr"), the registry names of its files, and where
    its authors publish them."""

    name: str
    family: str
    parts: tuple[str, ...]
    description: str
    upstream: str


RELEASED_MODELS: dict[str, ReleasedModel] = {
    "osdface": ReleasedModel(
        "osdface", "honestface", ("sd21_base", "osdface_vre", "osdface_lora"),
        "OSDFace (Wang et al., CVPR 2025): SD 2.1-base + VRE + UNet LoRA, one step at t = 399, 512 px",
        "jkwang28/OSDFace"),
    "vspbfr": ReleasedModel(
        "vspbfr", "vspbfr", ("vspbfr_style_encoder", "vspbfr_code_diffuser", "vspbfr_restoration"),
        "VSPBFR (Lu et al., Pattern Recognition 2025): style encoder, code diffuser, restoration network, 512 px",
        "LonglongaaaGo/VSPBFR"),
}


def is_released_name(value: object) -> bool:
    """True for a released model name ("osdface", "vspbfr") that is not also an existing path."""
    return isinstance(value, str) and value in RELEASED_MODELS and not Path(value).exists()


def released_sources(name: str, weights: Mapping[str, PathLike] | None = None,
                     home: PathLike | None = None) -> dict[str, Path]:
    """Registry name -> resolved path of every part of released model `name` (`weights`: registry name -> path,
    the config's `weights:` section; the rest from $HONESTFACE_HOME). Raises one MissingWeightError whose one-line
    message names every missing part, its config key and where to get it."""
    from honestface import weights as hw

    if name not in RELEASED_MODELS:
        raise KeyError(f"unknown released model {name!r}; known: {', '.join(RELEASED_MODELS)}")
    spec, weights = RELEASED_MODELS[name], dict(weights or {})
    found, missing = {}, []
    for part in spec.parts:
        try:
            found[part] = hw.resolve_weight(part, weights.get(part), home=home)
        except hw.MissingWeightError as e:
            missing.append(str(e))
    if missing:
        raise hw.MissingWeightError(
            f"released model '{name}' lacks {len(missing)} of its {len(spec.parts)} parts: " + " | ".join(missing)
            + f" | then run again (`{hw.FETCH_COMMAND} --model {name}` fetches what can be downloaded and prints "
              "the manual steps for the rest)")
    return found
