"""Video evaluation behind `scripts/evaluate.py --restored ours=out.mp4 ... --gt gt.mp4 --lq lq.mp4`: the per-frame
metrics of the folder evaluation on decoded frames, plus the temporal consistency `face_warp_error`.

Every video is decoded (`_read_video_frames`, PyAV; one video's frames in memory at a time) and written as
lossless PNGs `000000.png, 000001.png, ...` into its own temporary folder, so frame i of every video pairs with
frame i of the others; all videos must have the same frame count and frame size (one-line error naming the two
files otherwise). The temporary folders are removed when the run ends.

Our choices:
- Per-frame metrics (with a ground-truth video): `eval.metrics` when given, else `VIDEO_METRICS`: psnr, ssim,
  lpips and our identity metrics (`ids_<net>`, `idangle_<net>`: they detect the face in the whole frame). The
  published protocol metrics and ALD assume aligned face crops, FID a set of independent images; they run only
  when asked for. `--protocol` applies to image folders only. Without `--gt` no per-frame metric is computed (none
  of the full-reference ones can be), only `face_warp_error`.
- `face_warp_error` (`honestface.metrics.temporal`, x1e3, lower is better) for every method and for the input
  (`--lq`, row "input"), all judged by one flow computed on the guide video: the ground truth, else the input.
  Face boxes are detected on every guide frame with `eval.detector` (the evaluation's face detector, default
  dlib), every face kept. With `eval.metrics` given, it is computed only when the list names it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from honestface.log import get_logger

__all__ = ["TEMPORAL_METRIC", "VIDEO_METRICS", "VIDEO_SUFFIXES", "evaluate_videos", "is_video"]

log = get_logger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")
VIDEO_METRICS = ("psnr", "ssim", "lpips", "ids_{identity}", "idangle_{identity}")
TEMPORAL_METRIC = "face_warp_error"


def _split(item: str) -> tuple[str, Path]:
    """`name=path` or `path` (the rule of `honestface.metrics.pairing.parse_methods`)."""
    text = str(item)
    name, _, path = text.partition("=") if "=" in text and not Path(text).exists() else ("", "", text)
    return name, Path(path)


def is_video(item: str | os.PathLike) -> bool:
    """A restored item (`path` or `name=path`) names a video file (by its extension)."""
    return _split(str(item))[1].suffix.lower() in VIDEO_SUFFIXES


def _read_video_frames(path: str | os.PathLike) -> list[np.ndarray]:
    """Every frame of the first video stream of `path` as RGB uint8 (H, W, 3)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"no video stream in {path}")
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot decode the video {path}: {' '.join(str(err).split())}") from err
    if not frames:
        raise ValueError(f"no frames in the video {path}")
    return frames


def _video_path(path: Any, what: str) -> Path:
    p = Path(str(path))
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{what} {p} is not a video ({', '.join(VIDEO_SUFFIXES)}): with restored videos, give "
                         f"{what} as a video too")
    if not p.is_file():
        raise FileNotFoundError(f"{what} video not found: {p}")
    return p


def parse_videos(restored: Sequence[str]) -> dict[str, Path]:
    """`--restored` items that are videos -> {method name: video}; the name defaults to the file's stem."""
    if not all(is_video(r) for r in restored):
        raise ValueError("--restored mixes videos and folders: give only videos or only folders")
    methods: dict[str, Path] = {}
    for item in restored:
        name, path = _split(item)
        name = name or path.stem
        if name in methods:
            raise ValueError(f"two restored videos are both named {name!r}: give them names as name=path")
        methods[name] = _video_path(path, "restored")
    return methods


def _write_frames(video: Path, folder: Path, reference: tuple[Path, int, tuple[int, ...]] | None
                  ) -> tuple[int, tuple[int, ...]]:
    """Decode `video` into folder/000000.png ...; check its frame count and size against `reference`."""
    import cv2

    frames = _read_video_frames(video)
    n, shape = len(frames), frames[0].shape
    if any(f.shape != shape for f in frames):
        raise ValueError(f"the frames of {video} change size; every frame must have one size")
    if reference is not None and (n, shape) != reference[1:]:
        ref, rn, rshape = reference
        raise ValueError(f"the videos {ref} and {video} differ: {rn} frames of {rshape[1]}x{rshape[0]} against {n} "
                         f"of {shape[1]}x{shape[0]}; every video must have the same frame count and size")
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        if not cv2.imwrite(str(folder / f"{i:06d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write the frame {folder / f'{i:06d}.png'}")
    return n, shape


class _Frames(Sequence):
    """The PNG frames of one decoded video, read on access (RGB uint8)."""

    def __init__(self, folder: Path, count: int) -> None:
        self.folder, self.count = folder, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):
        import cv2

        return cv2.cvtColor(cv2.imread(str(self.folder / f"{i:06d}.png")), cv2.COLOR_BGR2RGB)


def _per_frame_metrics(e: Any, identity: str, with_gt: bool) -> tuple[list[str], bool]:
    """(per-frame metric names, whether face_warp_error is asked for)."""
    if e.metrics is None:
        return ([m.format(identity=identity) for m in VIDEO_METRICS] if with_gt else []), True
    asked = [str(m).strip().lower() for m in e.metrics if str(m).strip()]
    frame_metrics = [m for m in asked if m != TEMPORAL_METRIC]
    if frame_metrics and not with_gt:
        raise ValueError(f"per-frame metrics ({', '.join(frame_metrics)}) need the ground-truth video (--gt); "
                         f"without it a video evaluation computes {TEMPORAL_METRIC} only")
    return frame_metrics, TEMPORAL_METRIC in asked


def _frames_only_result(methods: dict[str, Path], dirs: dict[str, Path], count: int, gt: bool, lq: bool) -> Any:
    """An EvaluationResult without per-frame metrics: the frames, for the report's thumbnails."""
    from honestface.metrics.evaluate import EvaluationResult

    keys = [f"{i:06d}" for i in range(count)]
    frame = lambda label, k: dirs[label] / f"{k}.png"
    rows = {m: [{"image": k, "restored": frame(m, k), "gt": frame("gt", k) if gt else None,
                 "lq": frame("lq", k) if lq else None, "refs": [], "failures": {}} for k in keys] for m in methods}
    return EvaluationResult(methods=dict(methods), gt=None, lq=None, refs=None, columns=[], rows=rows,
                            dataset_metrics={m: {} for m in methods}, skipped={}, backends={}, implementations={},
                            landmarks={m: {} for m in methods})


def _temporal(e: Any, device: str, guide: tuple[str, Path], videos: dict[str, Path], dirs: dict[str, Path],
              count: int, result: Any) -> None:
    """face_warp_error of every method and the input, into `result.temporal` (or `result.skipped`)."""
    from honestface.face import build_detector
    from honestface.metrics.temporal import FLOW_METHOD, SCALE, face_warp_errors

    try:
        detector = build_detector(str(e.detector), device=None if device == "cpu" else device)
    except Exception as err:  # noqa: BLE001  (a missing detector weight: the metric is skipped with the reason)
        result.skipped[TEMPORAL_METRIC] = f"{type(err).__name__}: {' '.join(str(err).split())}"
        return
    frames = {label: _Frames(dirs[label], count) for label in videos}
    guide_frames = _Frames(dirs[guide[0]], count)
    boxes = [np.array([d.box for d in detector.detect(guide_frames[t])], dtype=np.float64).reshape(-1, 4)
             for t in range(count)]
    margin = 0.2
    results = face_warp_errors(frames, guide_frames, boxes, margin=margin)
    rows = {("input" if label == "lq" else label): results[label].as_dict() for label in videos}
    if all(r["count"] == 0 for r in rows.values()):
        note = (f"{TEMPORAL_METRIC}: {e.detector} found no face in two consecutive frames of the guide video "
                f"{guide[1]}; no value")
        log.warning(note)
        result.warnings.append(note)
    result.temporal = {"metric": TEMPORAL_METRIC, "scale": SCALE, "guide": guide[0], "guide_video": str(guide[1]),
                       "flow": FLOW_METHOD, "detector": str(e.detector), "margin": margin, "frames": count,
                       "faces": int(sum(len(b) for b in boxes)), "rows": rows}
    result.implementations[TEMPORAL_METRIC] = {
        "implementation": f"honestface.metrics.temporal (ours, after Lai et al. 2018: x{SCALE:g}; {FLOW_METHOD} of "
                          f"the {'ground truth' if guide[0] == 'gt' else 'input'}; faces by {e.detector})",
        "weights": {}}


def evaluate_videos(cfg: Any, restored: Sequence[str], device: str, work: Path, overwrite: bool) -> tuple[Any, Path]:
    """Evaluate restored videos (module docstring). `work`: an empty temporary folder the caller removes.
    Returns (EvaluationResult, output folder)."""
    from honestface.apps.evaluate import resolve_output
    from honestface.metrics.evaluate import evaluate_folders

    e = cfg.eval
    if e.protocol:
        raise ValueError("--protocol applies to image folders of a paper's test set, not to videos")
    methods = parse_videos(restored)
    for reserved in ("gt", "lq", "input"):
        if reserved in methods:
            raise ValueError(f"a restored video may not be named {reserved!r} (a row of the report): name it as "
                             "name=path")
    gt = _video_path(e.ground_truth, "the ground truth (--gt)") if e.ground_truth else None
    lq = _video_path(e.lq, "the input (--lq)") if e.lq else None
    if gt is None and lq is None:
        raise ValueError("a video evaluation needs the ground-truth video (--gt) or the input video (--lq): the "
                         "optical flow of face_warp_error is computed on one of them")
    identity = str(e.identity)
    frame_metrics, temporal = _per_frame_metrics(e, identity, gt is not None)
    refs = Path(e.references) if e.references else None
    output = resolve_output(e, methods, [*methods.values(), *(p for p in (gt, lq, refs) if p)], overwrite)
    videos = {**({"gt": gt} if gt else {}), **({"lq": lq} if lq else {}), **methods}
    dirs = {label: work / f"v{i}" for i, label in enumerate(videos)}
    reference = None
    for label, video in videos.items():
        count, shape = _write_frames(video, dirs[label], reference)
        reference = reference or (video, count, shape)
        log.info(f"decoded {video}: {count} frames of {shape[1]}x{shape[0]}")
    count = reference[1]
    if frame_metrics:
        result = evaluate_folders({m: dirs[m] for m in methods}, dirs["gt"], refs=refs,
                                  lq=dirs["lq"] if lq else None, metrics=frame_metrics, device=device,
                                  batch_size=e.batch_size, fid_ref=e.fid_ref, weights=dict(cfg.weights),
                                  landmarks=e.landmarks, detector=e.detector, identity=identity, verbose=True,
                                  crop_border=e.crop_border)
    else:  # no ground truth, or only face_warp_error asked for
        result = _frames_only_result(methods, dirs, count, gt is not None, lq is not None)
    result.methods, result.gt, result.lq = dict(methods), gt, lq
    result.videos = {label: str(video) for label, video in videos.items()}
    if temporal:
        judged = {**({"lq": lq} if lq else {}), **methods}
        _temporal(e, device, ("gt", gt) if gt else ("lq", lq), judged, dirs, count, result)
        for label, row in result.temporal.get("rows", {}).items():
            if not math.isnan(row["value"]):
                log.info(f"{TEMPORAL_METRIC} of {label}: {row['value']:.4f} (x1e3, {row['count']} face pairs)")
    return result, output
