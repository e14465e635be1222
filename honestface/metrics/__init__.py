"""Evaluation metrics of face restoration: landmark fidelity (LMD, ALD), identity (IDS, Deg., reference honesty) and
image quality (PSNR, SSIM, LPIPS, DISTS, NIQE, MUSIQ, MANIQA, CLIPIQA, FID) and the temporal consistency of videos
(`face_warp_error`). Definitions: docs/metrics.md.

Names are imported lazily, so `import honestface.metrics` loads neither torch, dlib nor pyiqa.
"""

from __future__ import annotations

from honestface._lazy import lazy_exports

_EXPORTS = {
    "affine_landmark_distance": "landmark",
    "landmark_distance": "landmark",
    "landmark_scores": "landmark",
    "component_template": "landmark",
    "LandmarkMetrics": "landmark",
    "DLIB68_MEAN_SHAPE": "landmark",
    "IdentityMetrics": "identity",
    "IQA_METRICS": "iqa",
    "IQAMetricInfo": "iqa",
    "IQAMetrics": "iqa",
    "available_metrics": "iqa",
    "load_fid_statistics": "iqa",
    "TemporalResult": "temporal",
    "face_warp_error": "temporal",
    "face_warp_errors": "temporal",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
