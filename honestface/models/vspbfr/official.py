"""Loading VSPBFR's released checkpoints (LonglongaaaGo/VSPBFR) into a built `VSPBFR`: `VSPBFR.from_official`.

Files (the released layouts, checked against the released classes in tests/test_released_layouts_vspbfr.py):
`style_encoder_decoder.pt` {'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg'} -> style encoder (e4e) and
StyleGAN2 (rosinality keys under 'decoder.'); `code_diffuser.pt` {'att_mapper'}; `restoration_net.pt` {'g', 'd',
'g_ema', ...} -> the restoration network from `key` and, when asked, the discriminator from 'd' (released
`encoder_convs.*` keys or ours). Every file is read weights-only (`honestface.checkpoints.load_checkpoint`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import nn

from honestface.models.vspbfr.code_diffuser import load_official_code_diffuser
from honestface.models.vspbfr.discriminator import convert_official_discriminator_state_dict
from honestface.models.vspbfr.restoration_net import load_official_restoration_state_dict
from honestface.models.vspbfr.style_encoder import load_e4e_state_dict
from honestface.models.vspbfr.stylegan2 import load_rosinality_state_dict, select_state_dict

__all__ = ["load_official_weights"]


def load_official_weights(model: nn.Module, files: Mapping[str, str | os.PathLike], key: str = "g_ema",
                          with_discriminator: bool = False) -> nn.Module:
    """Load the three released files (`files`: registry name -> path, as `VSPBFR.from_official` resolves them)
    strictly into `model`'s parts; returns the model."""
    from honestface.checkpoints import check_state_dict, load_checkpoint

    enc = load_checkpoint(files["vspbfr_style_encoder"])
    if not isinstance(enc, Mapping) or not isinstance(enc.get("state_dict"), Mapping):
        raise TypeError(f"{files['vspbfr_style_encoder']}: expected a dict with 'state_dict' (e4e layout)")
    load_e4e_state_dict(model.style_encoder, enc)
    weights = {k.removeprefix("module."): v for k, v in enc["state_dict"].items()}
    load_rosinality_state_dict(model.stylegan, select_state_dict(weights, prefix="decoder."))
    load_official_code_diffuser(model.code_diffuser, files["vspbfr_code_diffuser"])
    rest = load_checkpoint(files["vspbfr_restoration"])
    load_official_restoration_state_dict(model.restoration, rest, key=key)
    if with_discriminator:
        if not isinstance(rest, Mapping) or not isinstance(rest.get("d"), Mapping):
            raise ValueError(f"{files['vspbfr_restoration']}: no 'd' (discriminator) entry")
        d_state = convert_official_discriminator_state_dict(rest["d"])  # released or our key layout
        check_state_dict(model.discriminator, d_state, str(files["vspbfr_restoration"]) + " ['d']",
                         "the discriminator")
        model.discriminator.load_state_dict(d_state, strict=True)
    return model
