"""Export of trained models to other runtimes: ONNX graphs + manifest (`export_onnx`) and `OnnxPipeline`, the
restoration pipelines on onnxruntime (docs/export.md). Names are imported lazily, so `import honestface.export`
stays light."""

from __future__ import annotations

from honestface._lazy import lazy_exports

_EXPORTS = {
    "MANIFEST_FILE": "onnx_export",
    "export_onnx": "onnx_export",
    "read_manifest": "onnx_export",
    "OnnxPipeline": "onnx_pipeline",
    "OnnxHonestFacePipeline": "onnx_pipeline",
    "OnnxVSPBFRPipeline": "onnx_pipeline",
}
__all__ = ["MANIFEST_FILE", "OnnxHonestFacePipeline", "OnnxPipeline", "OnnxVSPBFRPipeline", "export_onnx",
           "read_manifest"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
