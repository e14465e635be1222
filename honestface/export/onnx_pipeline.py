"""OnnxPipeline: the restoration pipelines (aligned faces and whole photos) with every model call on onnxruntime.

`OnnxPipeline.from_pretrained(export_dir)` reads the export's manifest and returns the family's pipeline: an
`OnnxHonestFacePipeline` (a `HonestFacePipeline` whose model is `OnnxHonestFace`) or an `OnnxVSPBFRPipeline` (a
`VSPBFRPipeline` whose model is `OnnxVSPBFR`). All face handling (inputs, detection and alignment, references,
resize, colour fix, paste-back) is the torch pipeline's own code; only the model calls go to onnxruntime, so
outputs match the torch pipeline up to float round-off. The face detector, landmarker and identity encoder used for
photo mode and references stay the library's own (torch / dlib) models, as in the torch pipeline.

Our choices: the pipeline always works in float32 on the CPU side (`to()` accepts only that; the providers decide
where the graphs run); `merge_lora` does nothing (the export's UNet is merged already).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from honestface.export.onnx_export import read_manifest
from honestface.export.onnx_model import OnnxGraphs, OnnxHonestFace, OnnxVSPBFR
from honestface.pipelines.honestface_pipeline import HonestFacePipeline
from honestface.pipelines.vspbfr_pipeline import VSPBFRPipeline

__all__ = ["OnnxHonestFacePipeline", "OnnxPipeline", "OnnxVSPBFRPipeline"]


class OnnxPipeline:
    """Base of the onnxruntime pipelines; build one with `OnnxPipeline.from_pretrained(export_dir)`."""

    graphs: OnnxGraphs

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, detector: Any = "mtcnn", identity: Any = "dlib", *,
                        landmarker: Any = None, providers: list[str] | None = None, threads: int | None = None,
                        detector_threshold: float = 0.9, **kw: Any) -> OnnxPipeline:
        """Open an export folder (`honestface-export --format onnx`): the pipeline of the manifest's family
        (`OnnxHonestFacePipeline` or `OnnxVSPBFRPipeline`) with the given face detector / landmarker / identity
        encoder (names or objects, as the torch pipelines take them; VSPBFR uses no identity encoder), onnxruntime
        `providers` (default: CUDA when available, else CPU), CPU `threads` (default: onnxruntime's) and the
        family pipeline's own options in `kw` (e.g. VSPBFR's `mixing`)."""
        from honestface.pipelines.base import build_face_models

        manifest = read_manifest(folder)
        graphs = OnnxGraphs(folder, manifest, providers, threads)
        landmarker = build_face_models(None, landmarker, None)[1]
        if manifest["family"] == "vspbfr":  # read_manifest accepts only the families with an export
            return OnnxVSPBFRPipeline(OnnxVSPBFR(graphs), detector, landmarker, identity,
                                      detector_threshold=detector_threshold, **kw)
        return OnnxHonestFacePipeline(OnnxHonestFace(graphs), detector, landmarker, identity,
                                      detector_threshold=detector_threshold, **kw)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def default_batch_size(self) -> int:
        """4 wherever the graphs run: onnxruntime picks the device (the torch pipelines' CPU rule was measured for
        torch, not for onnxruntime)."""
        return 4

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> OnnxPipeline:
        """Only CPU float32 (the onnxruntime providers choose where the graphs run)."""
        if (device is not None and torch.device(device).type != "cpu") or dtype not in (None, torch.float32):
            raise ValueError("an OnnxPipeline runs float32 inputs on the CPU side; pick the device with providers= "
                             "(e.g. CUDAExecutionProvider) when opening it")
        return self

    def merge_lora(self) -> None:
        """Nothing to do: the exported UNet has the LoRA merged."""


class OnnxHonestFacePipeline(OnnxPipeline, HonestFacePipeline):
    """HonestFacePipeline on an exported HonestFace (references, aligned and photo mode as in the torch one)."""


class OnnxVSPBFRPipeline(OnnxPipeline, VSPBFRPipeline):
    """VSPBFRPipeline on an exported VSPBFR (aligned and photo mode, seeds and style mixing as in the torch one)."""
