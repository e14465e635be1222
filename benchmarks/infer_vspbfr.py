"""VSPBFR's stages for benchmarks/infer.py `--model vspbfr` (the method is in infer.py's docstring). Imported by
benchmarks/infer.py; not a script of its own.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from infer_common import peak_memory, start_measuring
from roofline import timed as _timed


def measure_vspbfr(scale: str, batch: int, device: torch.device, dtype: torch.dtype, repeats: int,
                   reuse_memory: bool = True) -> dict:
    """VSPBFR at `scale` (random weights, `build_vspbfr`): seconds per face of each stage of `VSPBFR.forward`,
    paste-back and the aligned-mode pipeline at `batch`, one seeded generator per face, plus peak memory."""
    from honestface.face import paste_back
    from honestface.models.vspbfr import build_vspbfr
    from honestface.pipelines import VSPBFRPipeline

    t0 = time.perf_counter()
    model = build_vspbfr(scale).to(device=device, dtype=dtype).eval()
    build = time.perf_counter() - t0
    reuse = start_measuring(device, reuse_memory)
    size = model.size
    g = torch.Generator().manual_seed(0)
    lq = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device, dtype)  # (B, 3, S, S) in [-1, 1]

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(0) for _ in range(batch)]

    times: dict[str, float] = {}
    times["style_encoder"], w_hat = _timed(
        lambda: torch.cat([model.encode_lq(lq[b:b + 1]) for b in range(batch)]), device, repeats)
    times["code_diffuser"], w0 = _timed(lambda: model.style_prompt(w_hat, gens()), device, repeats)
    times["feature_bank"], (_, bank) = _timed(lambda: model.feature_bank(w0, gens()), device, repeats)
    times["restoration"], image = _timed(lambda: model.restore(lq, w0, bank, gens(), 0.5), device, repeats)
    crops = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    photo = np.zeros((886, 1280, 3), np.uint8)
    mats = np.stack([np.array([[0.5, 0.0, -40.0 * i], [0.0, 0.5, -30.0]]) for i in range(batch)])
    times["paste_back"], _ = _timed(lambda: paste_back(photo, list(crops), mats), device, repeats)
    per_face = {k: v / batch for k, v in times.items()}
    pipe = VSPBFRPipeline(model)
    t, _ = _timed(lambda: pipe(list(crops), mode="aligned", batch_size=batch), device, repeats)
    params = {name: round(sum(p.numel() for p in getattr(model, name).parameters()) / 1e6, 2)
              for name in ("style_encoder", "stylegan", "code_diffuser", "restoration")}
    result = {"model": "vspbfr", "scale": scale, "batch": batch, "resolution": size,
              "stylegan_size": model.stylegan_size, "params_million": params, "device": str(device),
              "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(), "reuse_cpu_memory": reuse,
              "build_seconds": round(build, 2), "seconds_per_face": {k: round(v, 5) for k, v in per_face.items()},
              "model_seconds_per_face": round(sum(v for k, v in per_face.items() if k != "paste_back"), 5),
              "pipeline_seconds_per_face": round(t / batch, 5)}
    return result | peak_memory(device)
