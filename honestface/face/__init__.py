"""Face toolkit: detection, landmarks, alignment, identity embeddings, region masks, parsing and paste-back.

One small interface per task and several backends each, picked by name (the `face.*` config keys):

| task       | builder                         | backends                                   | module        |
|------------|---------------------------------|--------------------------------------------|---------------|
| detection  | `build_detector(name)`          | dlib (bundled), mtcnn (bundled), retinaface, scrfd | detection.py |
| landmarks  | `build_landmarker(name)`        | dlib68 (bundled), awing98, insightface106  | landmarks.py  |
| identity   | `build_identity_encoder(name)`  | dlib (bundled), arcface_onnx, iresnet      | identity.py   |
| parsing    | `build_parser(name)`            | bisenet, parsenet                          | parsing.py    |
| alignment  | `align_face`, `align_faces_torch` (differentiable) | FFHQ 512 and ArcFace 112 templates | alignment.py |
| masks      | `region_masks`, `region_masks_torch` | landmark polygons (no weights)         | masks.py      |
| paste-back | `paste_back`                    | ellipse / polygon / parsing / square soft masks | paste.py |
| photo → crops | `extract_faces` (detect, landmarks, align; keeps the matrix) | any of the above | crops.py |

Backends that need downloaded weights find them through `honestface.weights` and raise its MissingWeightError.
Names are imported lazily, so `import honestface.face` does not load torch, dlib or onnxruntime.
"""

from __future__ import annotations

from honestface._lazy import lazy_exports

_EXPORTS = {
    "FaceDetection": "types",
    "FaceDetector": "types",
    "LandmarkDetector": "types",
    "LandmarkScheme": "schemes",
    "get_scheme": "schemes",
    "register_scheme": "schemes",
    "DLIB68": "schemes",
    "WFLW98": "schemes",
    "FIVE": "schemes",
    "INSIGHTFACE106": "schemes",
    "build_detector": "detection",
    "select_faces": "detection",
    "build_landmarker": "landmarks",
    "detect_landmarks": "landmarks",
    "template": "alignment",
    "estimate_similarity": "alignment",
    "align_face": "alignment",
    "inverse_affine": "alignment",
    "warp_back": "alignment",
    "align_faces_torch": "alignment",
    "AlignedFace": "crops",
    "extract_faces": "crops",
    "transform_points": "crops",
    "paste_back": "paste",
    "region_masks": "masks",
    "region_masks_torch": "masks",
    "build_parser": "parsing",
    "parsing_region_masks": "parsing",
    "build_identity_encoder": "identity",
    "cosine_similarity": "identity",
    "identity_angle_degrees": "identity",
    "pairwise_cosine": "identity",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
