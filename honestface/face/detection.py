"""Face detection backends: boxes, scores and 5 points, behind one interface (`FaceDetector`).

The face toolkit needs faces found in LQ inputs (to crop and align them for restoration) and in outputs and
references (for the identity and landmark metrics). Every backend here returns `FaceDetection`s sorted by
descending score, with `points5` in the image-left-eye-first order of the ArcFace / FFHQ templates.

| name         | backend                                              | weights                                     |
|--------------|------------------------------------------------------|---------------------------------------------|
| `dlib`       | dlib HOG + linear SVM (Dalal & Triggs 2005; King 2009) | bundled with dlib / face-recognition-models |
| `mtcnn`      | MTCNN (Zhang et al., IEEE SPL 2016), facenet-pytorch | bundled with facenet-pytorch                |
| `retinaface` | RetinaFace (Deng et al., CVPR 2020), facexlib network | `retinaface_resnet50` / `retinaface_mobilenet0.25` |
| `scrfd`      | SCRFD (Guo et al., ICLR 2022), insightface ONNX      | `scrfd_10g` (buffalo_l det_10g.onnx)        |

Weights of the last two are resolved through `honestface.weights.resolve_weight`, so a missing file raises
`MissingWeightError` naming the file and where to get it (never a download).

Our choices:
- Input: RGB (H, W, 3) uint8 or float in [0, 1]; grayscale (H, W) / (H, W, 1) is repeated to 3 channels and
  RGBA drops its alpha channel. `as_rgb_uint8` does this once for every backend.
- dlib points5: dlib's own 5-point model marks the two corners of each eye and the nose base, which are not the
  standard 5 points (eye centres, nose tip, mouth corners). We run the bundled 68-point predictor on each HOG box
  and reduce it with `DLIB68.to_five` (eye centre = mean of the 6 eye points, nose tip = 30, mouth corners =
  48 / 54). The 68 points are kept in `extra["landmarks"]` (`extra["landmark_scheme"] == "dlib68"`).
- `min_size`: detections whose box is smaller than `min_size` pixels on its shorter side are dropped.
- Faces smaller than a backend's search window are not found (an empty list, no error): dlib HOG sees faces of
  about 80 / 2**upsample pixels and up; MTCNN searches from `min_face_size` (20) pixels.
- Turned faces: in-plane rotation is fine for MTCNN (alignment undoes it); dlib HOG's frontal model misses faces
  turned more than about 30-45 degrees. Profile faces (yaw near 90 degrees) are usually missed by both, and when
  found their 5 points are unreliable, so the aligned crop is skewed; raise `threshold` to skip doubtful ones.
- Several faces: every backend returns all of them; `select_faces` picks by a documented rule.
- `device=None` means CPU; pass e.g. "cuda" to run the torch / ONNX backends on a GPU. dlib runs on the CPU.
"""

from __future__ import annotations

import abc
import functools
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from honestface.checkpoints import check_state_dict, load_state_dict
from honestface.face.schemes import DLIB68
from honestface.face.types import FaceDetection
from honestface.weights import resolve_weight

DETECTORS = ("dlib", "mtcnn", "retinaface", "scrfd")
SELECT_RULES = ("largest", "center", "score", "all")


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any supported image -> contiguous RGB uint8 (H, W, 3).

    Accepts uint8 in [0, 255] or float in [0, 1]; (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped).
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy image array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    image = image[..., :3]
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if np.issubdtype(image.dtype, np.floating):
        lo, hi = float(np.min(image)), float(np.max(image))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
        return np.ascontiguousarray(np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8))
    raise ValueError(f"unsupported image dtype {image.dtype}; use uint8 in [0, 255] or float in [0, 1]")


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def select_faces(
    detections: Sequence[FaceDetection], rule: str = "largest", image_shape: tuple[int, ...] | None = None
) -> list[FaceDetection]:
    """Pick the faces to work on.

    Rules:
    - "all": every detection, in the given (score) order.
    - "score": the single most confident detection.
    - "largest": the single detection with the largest box area (ties: the higher score).
    - "center": the single detection whose box centre is nearest the image centre; needs `image_shape`
      ((H, W) or (H, W, C)).
    No detections gives an empty list, whatever the rule.
    """
    if rule not in SELECT_RULES:
        raise ValueError(f"unknown face selection rule {rule!r}; allowed: {', '.join(SELECT_RULES)}")
    dets = list(detections)
    if not dets or rule == "all":
        return dets
    if rule == "score":
        return [max(dets, key=lambda d: d.score)]
    if rule == "largest":
        return [max(dets, key=lambda d: (d.area, d.score))]
    if image_shape is None:
        raise ValueError("select_faces(rule='center') needs image_shape=(H, W)")
    centre = np.array([image_shape[1] / 2.0, image_shape[0] / 2.0])
    return [min(dets, key=lambda d: (float(np.linalg.norm(d.center - centre)), -d.score))]


def _finalize(dets: list[FaceDetection], min_size: float) -> list[FaceDetection]:
    """Drop faces below min_size (shorter box side) and sort by descending score."""
    kept = [d for d in dets if min(d.width, d.height) >= min_size]
    return sorted(kept, key=lambda d: -d.score)


def _make(box, score, points5=None, **extra) -> FaceDetection:
    pts = None if points5 is None else np.asarray(points5, dtype=np.float64).reshape(5, 2)
    return FaceDetection(box=np.asarray(box, dtype=np.float64).reshape(4), score=float(score), points5=pts, extra=extra)


def torch_device(device=None):
    """None -> CPU; otherwise whatever torch.device accepts ("cuda", "cuda:1", torch.device)."""
    import torch

    return torch.device("cpu") if device is None else torch.device(device)


def onnx_session(path: str | os.PathLike, device=None):
    """An onnxruntime session on the CPU, or on CUDA when `device` is a cuda device and CUDA is available."""
    import onnxruntime as ort

    dev = "cpu" if device is None else str(device)
    providers: list = ["CPUExecutionProvider"]
    if dev.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(dev.split(":")[1]) if ":" in dev else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            warnings.warn(f"onnxruntime has no CUDAExecutionProvider here; running {Path(path).name} on the CPU")
    return ort.InferenceSession(str(path), providers=providers)


def dlib_model_path(filename: str) -> Path:
    """Path of a model file bundled in face-recognition-models (found without importing that package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dlib model {filename!r} comes from the package 'face-recognition-models', which is not installed"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file not found: {path}")
    return path


@functools.lru_cache(maxsize=4)
def load_dlib_shape_predictor(path: str):
    """Load (once per process) a dlib shape predictor; shared by the dlib detector and the dlib68 landmarker."""
    import dlib

    if not Path(path).is_file():
        raise FileNotFoundError(f"dlib shape predictor not found: {path}")
    return dlib.shape_predictor(str(path))


class _Detector(abc.ABC):
    """Shared behaviour: input conversion, min_size filter, score sort, batch loop."""

    name: str = ""

    def __init__(self, min_size: float = 0.0) -> None:
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}")
        self.min_size = float(min_size)

    @abc.abstractmethod
    def _detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        """Unsorted, unfiltered detections of one RGB uint8 (H, W, 3) image."""

    def detect(self, image: np.ndarray) -> list[FaceDetection]:
        """Faces in one image (RGB (H, W, 3) uint8 or float [0, 1]), sorted by descending score."""
        return _finalize(self._detect(as_rgb_uint8(image)), self.min_size)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection]]:
        """One list of detections per image."""
        return [self.detect(im) for im in images]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, min_size={self.min_size})"


# ----------------------------------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------------------------------


class DlibHOGDetector(_Detector):
    """dlib's frontal HOG detector; points5 from the 68-point shape predictor (see module docstring).

    upsample: how many times the image is doubled before the search (finds smaller faces, slower).
    threshold: SVM score offset (dlib's `adjust_threshold`); negative values return more, weaker boxes.
    predictor: path of a 68-point shape predictor, default the bundled one; `points5=False` skips it.
    """

    name = "dlib"

    def __init__(
        self,
        upsample: int = 1,
        threshold: float = 0.0,
        min_size: float = 0.0,
        points5: bool = True,
        predictor: str | os.PathLike | None = None,
    ) -> None:
        import dlib

        super().__init__(min_size)
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.upsample, self.threshold = int(upsample), float(threshold)
        self._hog = dlib.get_frontal_face_detector()
        self._predictor = None
        if points5:
            default = "shape_predictor_68_face_landmarks.dat"
            path = Path(predictor) if predictor is not None else dlib_model_path(default)
            self._predictor = load_dlib_shape_predictor(str(path))

    def _detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        rects, scores, _ = self._hog.run(rgb, self.upsample, self.threshold)
        dets = []
        for rect, score in zip(rects, scores):
            # dlib rectangles are inclusive pixel ranges; +1 gives [x0, x1) extents like the other backends.
            box = [rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1]
            if self._predictor is None:
                dets.append(_make(box, score))
                continue
            shape = self._predictor(rgb, rect)
            pts68 = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # (68, 2)
            dets.append(_make(box, score, DLIB68.to_five(pts68), landmarks=pts68, landmark_scheme="dlib68"))
        return dets


class MTCNNDetector(_Detector):
    """facenet-pytorch MTCNN with its bundled P/R/O-Net weights.

    threshold: the final (O-Net) probability threshold; the first two stages keep facenet's 0.6 / 0.7.
    detect_batch runs same-size images through the network together.
    """

    name = "mtcnn"

    def __init__(
        self,
        device=None,
        threshold: float = 0.7,
        min_face_size: int = 20,
        factor: float = 0.709,
        min_size: float = 0.0,
    ) -> None:
        from facenet_pytorch import MTCNN

        super().__init__(min_size)
        self.device = torch_device(device)
        self.model = MTCNN(
            keep_all=True,
            min_face_size=int(min_face_size),
            thresholds=[0.6, 0.7, float(threshold)],
            factor=float(factor),
            device=self.device,
        )

    @staticmethod
    def _parse(boxes, probs, points) -> list[FaceDetection]:
        if boxes is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # numpy 2 gives object arrays
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        return [_make(b, p, pts) for b, p, pts in zip(boxes, probs, points)]

    def _detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        boxes, probs, points = self.model.detect(rgb, landmarks=True)
        return self._parse(boxes, probs, points)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[FaceDetection]]:
        rgbs = [as_rgb_uint8(im) for im in images]
        out: list[list[FaceDetection]] = [[] for _ in rgbs]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(rgbs):
            groups.setdefault(im.shape[:2], []).append(i)
        for idx in groups.values():
            batch = np.stack([rgbs[i] for i in idx])  # (B, H, W, 3)
            boxes, probs, points = self.model.detect(batch, landmarks=True)
            for j, i in enumerate(idx):
                b = None if boxes is None else boxes[j]
                dets = [] if b is None else self._parse(b, probs[j], points[j])
                out[i] = _finalize(dets, self.min_size)
        return out


_RETINAFACE_NETWORKS = {
    "resnet50": ("resnet50", "retinaface_resnet50"),
    "mobilenet0.25": ("mobile0.25", "retinaface_mobilenet0.25"),
    "mobile0.25": ("mobile0.25", "retinaface_mobilenet0.25"),
}


class RetinaFaceDetector(_Detector):
    """RetinaFace with facexlib's network class; weights loaded by us (weights_only) from the registry.

    network: "resnet50" or "mobilenet0.25". threshold / nms_threshold: facexlib's defaults (0.8 / 0.4).
    The image is run at its own size (facexlib's `use_origin_size=True`).
    """

    name = "retinaface"

    def __init__(
        self,
        network: str = "resnet50",
        weights: str | os.PathLike | None = None,
        device=None,
        threshold: float = 0.8,
        nms_threshold: float = 0.4,
        min_size: float = 0.0,
    ) -> None:


        super().__init__(min_size)
        if network not in _RETINAFACE_NETWORKS:
            raise ValueError(f"unknown RetinaFace network {network!r}; allowed: resnet50, mobilenet0.25")
        fx_name, key = _RETINAFACE_NETWORKS[network]
        path = resolve_weight(key, weights)  # raises MissingWeightError before anything is built
        from facexlib.detection.retinaface import RetinaFace

        self.device = torch_device(device)
        self.threshold, self.nms_threshold = float(threshold), float(nms_threshold)
        with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" from facexlib's resnet50
            warnings.simplefilter("ignore", UserWarning)
            net = RetinaFace(network_name=fx_name, half=False, phase="test", device=self.device)
        state = load_state_dict(path)
        check_state_dict(net, state, str(path), f"facexlib RetinaFace {fx_name}")
        net.load_state_dict(state, strict=True)
        self.net = net.to(self.device).eval()

    def _detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        import torch

        bgr = np.ascontiguousarray(rgb[..., ::-1])  # facexlib subtracts BGR means
        with torch.no_grad():
            out = self.net.detect_faces(
                bgr, conf_threshold=self.threshold, nms_threshold=self.nms_threshold, use_origin_size=True
            )
        out = np.asarray(out, dtype=np.float64).reshape(-1, 15)  # (N, 4 box + 1 score + 10 points)
        return [_make(r[:4], r[4], r[5:15]) for r in out]


class SCRFDDetector(_Detector):
    """insightface SCRFD (det_10g.onnx of buffalo_l) through insightface's SCRFD class and our own session.

    input_size: (W, H) the image is letterboxed to (insightface's det_size); must be multiples of 32.
    """

    name = "scrfd"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device=None,
        threshold: float = 0.5,
        nms_threshold: float = 0.4,
        input_size: tuple[int, int] = (640, 640),
        min_size: float = 0.0,
    ) -> None:

        super().__init__(min_size)
        if len(input_size) != 2 or any(int(s) <= 0 or int(s) % 32 for s in input_size):
            raise ValueError(f"SCRFD input_size must be two positive multiples of 32, got {input_size}")
        path = resolve_weight("scrfd_10g", weights)
        from insightface.model_zoo.scrfd import SCRFD

        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.model = SCRFD(model_file=str(path), session=onnx_session(path, device))
        self.model.det_thresh = float(threshold)
        self.model.nms_thresh = float(nms_threshold)

    def _detect(self, rgb: np.ndarray) -> list[FaceDetection]:
        bgr = np.ascontiguousarray(rgb[..., ::-1])  # insightface models take OpenCV BGR
        det, kpss = self.model.detect(bgr, input_size=self.input_size, max_num=0)
        det = np.asarray(det, dtype=np.float64).reshape(-1, 5)  # (N, 4 box + 1 score)
        if kpss is None:
            return [_make(d[:4], d[4]) for d in det]
        kpss = np.asarray(kpss, dtype=np.float64).reshape(-1, 5, 2)
        return [_make(d[:4], d[4], k) for d, k in zip(det, kpss)]


# ----------------------------------------------------------------------------------------------------------------
# Builder
# ----------------------------------------------------------------------------------------------------------------


def build_detector(name: str, *, device=None, weights: str | os.PathLike | None = None, **kwargs):
    """A face detector by config name: "dlib", "mtcnn", "retinaface" or "scrfd".

    device: torch / onnxruntime device (None = CPU; ignored by dlib, which runs on the CPU).
    weights: explicit weight file (retinaface, scrfd; for dlib the 68-point predictor used for points5).
    kwargs: the backend's own options (`min_size`, `threshold`, dlib `upsample`, retinaface `network`, ...).
    """
    if name == "dlib":
        return DlibHOGDetector(predictor=weights, **kwargs)
    if name == "mtcnn":
        if weights is not None:
            raise ValueError("the mtcnn detector uses the weights bundled with facenet-pytorch; do not pass weights")
        return MTCNNDetector(device=device, **kwargs)
    if name == "retinaface":
        return RetinaFaceDetector(weights=weights, device=device, **kwargs)
    if name == "scrfd":
        return SCRFDDetector(weights=weights, device=device, **kwargs)
    raise ValueError(f"unknown face detector {name!r}; allowed: {', '.join(DETECTORS)}")
