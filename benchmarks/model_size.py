"""Parameter counts of HonestFace per component (trainable / frozen) at the "tiny" and "sd21" presets, as JSON.

The sd21 model is built on the meta device (`with torch.device("meta")`, random-init architecture,
`pretrained=False`), so no weights are allocated or needed. Usage:

    python benchmarks/model_size.py [--presets tiny sd21] [--lora-rank 16] [--no-discriminator]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without `pip install -e .`

from honestface.models import HonestFace


def _count(params: list[tuple[str, nn.Parameter]]) -> dict[str, int]:
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    return {"trainable": trainable, "frozen": sum(p.numel() for _, p in params) - trainable}


def component_counts(model: HonestFace) -> dict[str, dict[str, int]]:
    """{component: {"trainable": n, "frozen": n}}; the generator is split into UNet (LoRA = trainable) and VAE."""
    named = list(model.named_parameters())
    groups = {"unet": "generator.unet.", "vae": "generator.vae.", "vre": "vre.",
              "identity_backbone": "identity_backbone.", "image_backbone": "image_backbone.",
              "face_identity_encoder": "face_identity_encoder.",
              "facial_feature_extractor": "facial_feature_extractor.",
              "fusion": "fusion.", "discriminator": "discriminator."}
    out = {}
    for name, prefix in groups.items():
        params = [(n, p) for n, p in named if n.startswith(prefix)]
        if params:
            out[name] = _count(params)
    return out


def measure(preset: str, lora_rank: int, with_discriminator: bool) -> dict[str, object]:
    start = time.perf_counter()
    meta = preset != "tiny"
    with torch.device("meta") if meta else nullcontext():
        model = HonestFace.from_preset(preset, pretrained=False, lora_rank=lora_rank,
                                       with_discriminator=with_discriminator)
    components = component_counts(model)
    generator_trainable = sum(p.numel() for p in model.trainable_parameters())
    total = sum(c["trainable"] + c["frozen"] for c in components.values())
    return {
        "preset": preset, "device": "meta" if meta else "cpu", "lora_rank": lora_rank,
        "components": components,
        "generator_side_trainable": generator_trainable,
        "discriminator_trainable": sum(p.numel() for p in model.discriminator_parameters()),
        "total": total,
        "prompt_tokens": model.fusion.num_tokens if model.use_ide else model.vre.config.num_tokens,
        "build_seconds": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "sd21"], choices=["tiny", "sd21"])
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--no-discriminator", action="store_true")
    args = parser.parse_args()
    results = {p: measure(p, args.lora_rank, not args.no_discriminator) for p in args.presets}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
