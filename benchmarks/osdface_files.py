"""Random weights at full size in OSDFace's released file formats, laid out in a weights home as the README says, for
`benchmarks/infer.py --from osdface-files` (the path a user takes with the released files: name -> registry ->
one conversion -> library folder).

    $HOME/stable-diffusion-2-1-base/{unet,vae,scheduler}   diffusers layout, fp32 safetensors, VAE sample_size 768
    $HOME/osdface/associate_2.ckpt                         {"state_dict": {"vqvae_LQ.encoder.*", ...}} (torch.save)
    $HOME/osdface/pytorch_lora_weights.safetensors         "unet.<module>.lora_A/B.weight", rank 16
    $HOME/osdface/embedding_change_weights.pth             TwoLayerConv1x1 state: conv1 (256, 512, 1), conv2

The key layouts are the released ones (tests/test_released_layouts.py checks them against the released source);
the tensors come from our randomly initialised modules of the same sizes. Only the parts inference reads are
written (the released association checkpoint also holds the HQ auto-encoder, the decoders and the loss networks,
which change the one-time conversion's reading time, not inference).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

DONE = "osdface-files-v1.done"


def write_osdface_files(home: Path, seed: int = 0) -> Path:
    """Write the files under `home` once (a marker file says they are complete); returns `home`."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from safetensors.torch import save_file

    from honestface.models.generator import OneStepGenerator
    from honestface.models.presets import SD21_SCHEDULER_CONFIG, SD21_UNET_CONFIG, SD21_VAE_CONFIG
    from honestface.models.vre import VisualRepresentationEmbedder

    if (home / DONE).is_file():
        return home
    home.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=home, prefix=".writing-"))
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**{**SD21_UNET_CONFIG, "sample_size": 96})  # the downloaded files say 96 / 768
        vae = AutoencoderKL(**{**SD21_VAE_CONFIG, "sample_size": 768})
        sd = tmp / "stable-diffusion-2-1-base"
        vae.save_pretrained(sd / "vae")
        DDIMScheduler(**SD21_SCHEDULER_CONFIG).save_pretrained(sd / "scheduler")
        gen = OneStepGenerator(unet, vae, SD21_SCHEDULER_CONFIG, lora_rank=16, lora_alpha=16.0)
        lora = {f"unet.{k}": (torch.randn_like(v) * 0.01).contiguous() for k, v in gen.lora_state_dict().items()}
        gen.remove_lora()
        unet.save_pretrained(sd / "unet")
        del gen, unet, vae
        (tmp / "osdface").mkdir()
        save_file(lora, str(tmp / "osdface" / "pytorch_lora_weights.safetensors"))
        vre = VisualRepresentationEmbedder.from_preset("osdface")
        backbone = {k: v for k, v in vre.state_dict().items() if not k.startswith("projection.")}
        norm2 = {k.replace(".norm1.", ".norm2."): v.clone() for k, v in backbone.items()
                 if ".attn" in k and ".norm1." in k}  # MultiHeadAttnBlock's unused cross-attention norm
        torch.save({"state_dict": {f"vqvae_LQ.{k}": v for k, v in {**backbone, **norm2}.items()},
                    "global_step": 0}, tmp / "osdface" / "associate_2.ckpt")
        torch.save(vre.projection.state_dict(), tmp / "osdface" / "embedding_change_weights.pth")
        for part in ("stable-diffusion-2-1-base", "osdface"):
            if (home / part).exists():
                shutil.rmtree(home / part)
            (tmp / part).rename(home / part)
        (home / DONE).write_text("complete\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return home
