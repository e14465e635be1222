"""ONNX Runtime stand-ins for the torch models: objects with the model interface the torch pipelines call
(HonestFace: `native_settings`, `use_ide`, `encode_references`, the forward call returning `x_hat`; VSPBFR:
`native_settings`, `size`, the forward call returning `image`), backed by the graphs of an export folder
(`honestface.export.onnx_export`). The pipelines' face handling runs unchanged around them.

Our choices: sessions use the CUDA provider when onnxruntime offers it, else the CPU provider (`providers=` picks
them explicitly); inputs and outputs cross as float32 numpy arrays; every random number is drawn here with the
pipeline's per-face generators by the torch model's own calls and order (HonestFace: the VAE posterior noise by
diffusers' `randn_tensor`; VSPBFR: the diffusion start codes, the StyleGAN2 noise maps, the codes z with style
mixing and the restoration noise maps, `OnnxVSPBFR`), so an export reproduces the torch output up to float
round-off. VSPBFR's code-diffuser chain is a Python loop over the exported one-step graph.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from honestface.models.native import NativeSettings

__all__ = ["OnnxGraphs", "OnnxHonestFace", "OnnxVSPBFR", "default_providers"]


def default_providers() -> list[str]:
    """["CUDAExecutionProvider", "CPUExecutionProvider"] when onnxruntime has CUDA, else the CPU provider."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


class OnnxGraphs:
    """The onnxruntime sessions of an export folder, opened on first use; `run(name, **inputs)` -> outputs (numpy)."""

    def __init__(self, folder: str | os.PathLike, manifest: dict[str, Any], providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        self.folder, self.manifest = Path(folder), manifest
        self.providers = list(providers) if providers else default_providers()
        self.threads = threads
        self._sessions: dict[str, Any] = {}

    def session(self, name: str) -> Any:
        import onnxruntime as ort

        if name not in self._sessions:
            if name not in self.manifest["graphs"]:
                raise ValueError(f"{self.folder}: the export has no {name!r} graph")
            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = int(self.threads)
            path = self.folder / self.manifest["graphs"][name]["file"]
            self._sessions[name] = ort.InferenceSession(str(path), opts, providers=self.providers)
        return self._sessions[name]

    def run(self, name: str, **inputs: Any) -> list[np.ndarray]:
        """Run graph `name`; inputs the graph does not use (dropped at export) are not fed."""
        used = self.manifest["graphs"][name]["inputs"]
        feeds = {k: _numpy(v) for k, v in inputs.items() if k in used}
        return self.session(name).run(None, feeds)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.numpy() if x.dtype == torch.bool else x.float().numpy()
    return np.asarray(x)


class _Module:
    """What the pipelines need of a torch module besides its call: eval / requires_grad_ do nothing here."""

    def eval(self) -> Any:
        return self

    def requires_grad_(self, flag: bool = True) -> Any:
        return self


class OnnxHonestFace(_Module):
    """A HonestFace export run by onnxruntime: `HonestFace.forward` (with precomputed reference features) and
    `encode_references`, on CPU tensors."""

    def __init__(self, graphs: OnnxGraphs) -> None:
        self.graphs = graphs
        facts = graphs.manifest["honestface"]
        self.latent_shape = tuple(int(v) for v in facts["latent_shape"])
        self.encode_mode, self.use_ide, self.blind_mode = facts["encode_mode"], bool(facts["use_ide"]), \
            facts["blind_mode"]
        self.native_settings = NativeSettings.from_dict(graphs.manifest["native"])

    def encode_references(self, refs: torch.Tensor, ref_mask: torch.Tensor | None = None) -> Any:
        """refs (1, K, 3, R, R) in [-1, 1] -> ReferenceFeatures (embeddings (1, K, id), tokens (1, K, T, C), mask)."""
        from honestface.models.honestface import ReferenceFeatures

        if not self.use_ide:
            raise ValueError("this model has no identity embedder (use_ide=False): references are not used")
        b, k = refs.shape[:2]
        mask = torch.ones(b, k, dtype=torch.bool) if ref_mask is None else ref_mask.cpu()
        emb, tok = self.graphs.run("ide_reference", refs=refs[mask])
        embeddings = torch.zeros(b, k, emb.shape[-1])
        tokens = torch.zeros(b, k, *tok.shape[1:])
        embeddings[mask], tokens[mask] = torch.from_numpy(emb), torch.from_numpy(tok)
        return ReferenceFeatures(embeddings=embeddings, tokens=tokens, mask=mask)

    def __call__(self, lq: torch.Tensor, generator: Any = None, ref_embeddings: torch.Tensor | None = None,
                 ref_tokens: torch.Tensor | None = None, ref_mask: torch.Tensor | None = None) -> SimpleNamespace:
        """lq (B, 3, R, R) in [-1, 1] -> namespace with x_hat (B, 3, R, R) in [-1, 1] (float32 CPU tensor)."""
        from diffusers.utils.torch_utils import randn_tensor

        run = self.graphs.run
        b = lq.shape[0]
        shape = (b, *self.latent_shape)
        noise = randn_tensor(shape, generator=generator, dtype=torch.float32) if self.encode_mode == "sample" \
            else torch.zeros(shape)
        (z_lq,) = run("vae_encoder", lq=lq, noise=noise)
        (p,) = run("vre", lq=lq)
        if self.use_ide:
            with_refs = ref_embeddings is not None
            lq_emb = lq_tok = None
            if with_refs or self.blind_mode != "null":
                lq_emb, lq_tok = run("ide_image", lq=lq)
            if with_refs:
                (p,) = run("fusion", p_L=p, lq_embedding=lq_emb, lq_tokens=lq_tok, ref_embeddings=ref_embeddings,
                           ref_tokens=ref_tokens, ref_mask=ref_mask)
            else:
                (p,) = run("fusion_blind", p_L=p, lq_embedding=lq_emb, lq_tokens=lq_tok)
        (z_hat,) = run("unet", z_lq=z_lq, prompt_embeds=p)
        (x_hat,) = run("vae_decoder", z_hat=z_hat)
        return SimpleNamespace(x_hat=torch.from_numpy(x_hat))


class OnnxVSPBFR(_Module):
    """A VSPBFR export run by onnxruntime: `VSPBFR.forward` with one generator per face (as `VSPBFRPipeline` calls
    it), on CPU tensors. Per face, its generator draws in the torch model's order: the diffusion start codes
    (1, N, D), the StyleGAN2 noise maps, the codes z (`sample_style_codes`), the restoration noise maps. As in the
    torch model, the style encoder and the code-diffuser chain run one face at a time (a face's codes do not depend
    on its batch neighbours), the feature bank and the restoration network on the whole batch."""

    def __init__(self, graphs: OnnxGraphs) -> None:
        self.graphs = graphs
        facts = graphs.manifest["vspbfr"]
        self.codes = tuple(int(v) for v in facts["codes"])  # (N, D) of w_hat / w0
        self.restoration_codes = tuple(int(v) for v in facts["restoration_codes"])  # (n, D) of z
        self.num_timesteps = int(facts["num_timesteps"])
        self.bank_names = [f"bank_{r}" for r in facts["bank_resolutions"]]
        self.noise = {name: [tuple(s) for s in facts[f"{name}_noise"]] for name in ("feature_bank", "restoration")}
        self.native_settings = NativeSettings.from_dict(graphs.manifest["native"])
        self.size = self.native_settings.resolution

    def _noise(self, name: str, generators: list[torch.Generator]) -> torch.Tensor:
        """(B, L): per face, the graph's noise maps drawn one by one (as the torch model's hooks do), flattened."""
        from honestface.models.vspbfr.layers import sample_noise

        return torch.cat([torch.cat([sample_noise((1, 1, h, w), generator=g).flatten(1) for h, w in self.noise[name]],
                                    dim=1) for g in generators])

    def __call__(self, lq: torch.Tensor, generator: Any = None, mixing: float = 0.0) -> SimpleNamespace:
        """lq (B, 3, R, R) in [-1, 1], generator: one torch.Generator per face -> namespace with image
        (B, 3, R, R) (float32 CPU tensor)."""
        from honestface.models.vspbfr.layers import sample_noise
        from honestface.models.vspbfr.vspbfr import sample_style_codes

        b = lq.shape[0]
        if not isinstance(generator, (list, tuple)) or len(generator) != b:
            raise ValueError(f"OnnxVSPBFR needs one torch.Generator per face ({b}), as VSPBFRPipeline passes them")
        run = self.graphs.run
        w0 = []
        for face, g in zip(lq, generator):  # one face at a time, as the torch model (batch-independent codes)
            (w_hat,) = run("style_encoder", lq=face[None])
            x = sample_noise((1, *self.codes), generator=g)  # x_T (1, N, D)
            for step in range(self.num_timesteps - 1, -1, -1):  # the deterministic reverse chain, t = T-1 .. 0
                (x,) = run("code_diffuser_step", x_t=x, w_hat=w_hat, t=np.full(1, step, dtype=np.int64))
            w0.append(x)
        x = np.concatenate(w0)  # (B, N, D)
        bank = run("feature_bank", w0=x, noise=self._noise("feature_bank", generator))
        n, d = self.restoration_codes
        z = torch.cat([sample_style_codes(g, mixing, n, d) for g in generator])  # (B, n, D)
        (image,) = run("restoration", lq=lq, w0=x, z=z, noise=self._noise("restoration", generator),
                       **dict(zip(self.bank_names, bank)))
        return SimpleNamespace(image=torch.from_numpy(image))
