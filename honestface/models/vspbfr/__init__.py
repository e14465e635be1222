"""VSPBFR (Lu et al., "Visual Style Prompt Learning Using Diffusion Models for Blind Face Restoration", arXiv
2412.21042): StyleGAN2 building blocks (`layers`), the StyleGAN2 generator / feature bank (`stylegan2`), the
discriminator, the e4e style encoder, the W+ code diffuser, the SMART layers, the restoration network and the
composite model with its presets and official-checkpoint loading (`vspbfr`).

Names are imported lazily (first use loads their module), so `import honestface.models.vspbfr` stays light.
"""

from __future__ import annotations

from honestface._lazy import lazy_exports

_MODULES = {
    "layers": ("Blur", "ConstantInput", "ConvLayer", "Downsample", "EqualConv2d", "EqualLinear", "FusedLeakyReLU",
               "ModulatedConv2d", "NoiseInjection", "PixelNorm", "ResBlock", "StyledConv", "ToRGB", "Upsample",
               "fused_leaky_relu", "make_kernel", "sample_noise", "stylegan_channels", "upfirdn2d"),
    "stylegan2": ("StyleGAN2Generator", "StyleGAN2Output", "load_rosinality_state_dict", "select_state_dict"),
    "discriminator": ("StyleGAN2Discriminator", "minibatch_stddev"),
    "latent_discriminator": ("LatentCodeDiscriminator",),
    "style_encoder": ("BottleneckIRSE", "GradualStyleBlock", "SEModule", "StyleEncoder", "load_e4e_state_dict",
                      "style_split"),
    "code_diffuser": ("BETA_SCHEDULES", "ChannelCrossAttention", "CodeDiffuser", "CodeDiffuserBlock",
                      "ScaledLeakyReLU", "WPlusDiffusion", "beta_schedule", "load_official_code_diffuser"),
    "smart": ("DEFAULT_DILATIONS", "DilatedModulatedConv2d", "LargeConvLayer", "SMARTLayer"),
    "official": ("load_official_weights",),
    "restoration_net": ("RestorationNetwork", "convert_official_restoration_state_dict",
                        "load_official_restoration_state_dict"),
    "vspbfr": ("CONFIG_FILE", "FROZEN_PARTS", "PARTS", "VSPBFR", "VSPBFR_PRESETS", "WEIGHTS_FILE", "VSPBFROutput",
               "build_vspbfr", "is_vspbfr_folder", "sample_style_codes"),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)  # noqa: PLE0605

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
