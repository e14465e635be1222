"""restore_video: every face of a clip restored, stable in time, with one reference match per person.

The steps (each a function below):
1. analyse (`honestface.video.analysis`): decode every frame, detect and embed the faces, link them into tracks,
   smooth each track's five points over time.
2. references, once per track: the track's mean identity embedding is matched against the reference pool
   (`ReferencePool.match`, top `max_references` above `ref_threshold`), so every frame of a person uses the same
   references; a blind family (VSPBFR) uses none.
3. restore in chunks of `chunk_frames` frames: each face is aligned with its smoothed points; the chunk's faces go
   through one pipeline call in aligned mode, ordered by track then frame (a batch holds consecutive frames of one
   person), with the same seed for every face; each restored face is pasted back with the crop mask warped by its
   smoothed alignment. The chunk is written losslessly into the work folder.
4. encode: the chunks become the output (the source's frame rate, its audio stream copied; `honestface.video.io`),
   which appears only when complete; the work folder is then removed.

Our choices:
- A track is continuous: frames where the detector missed the face inside a track (gaps up to `max_gap`) get points
  interpolated linearly between the smoothed neighbours, so the face stays restored.
- A face fades in / out over `fade_frames` frames where its track starts or ends inside the clip (the paste mask is
  scaled), so a restoration does not pop on or off; a track that starts on the first frame does not fade in.
- Frames without a restored face are written as decoded: with `lossless=True` they are bit-identical to the input.
- Resuming: the work folder (default `.<output name>.partial` beside the output) holds the analysis and the finished
  chunks, with a `state.json` naming the source (path, size, mtime) and every setting that changes pixels
  (`fingerprint`); the same call after an interruption keeps them, and a different call stops with one line unless
  `overwrite` (then the old work folder is discarded). Encoding settings (crf, lossless) are not in it: chunks are
  lossless, so a rerun with another crf reuses them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from diffusers.utils import BaseOutput

from honestface.io import atomic_write_text
from honestface.log import get_logger
from honestface.video.analysis import TrackingOptions, VideoAnalysis, analyse_video
from honestface.video.io import VideoError, VideoWriter, is_video_file, probe_video, read_frames

__all__ = ["VideoRestorationOutput", "restore_video", "work_folder"]

log = get_logger(__name__)
STATE_FILE, ANALYSIS_FILE = "state.json", "analysis.json"


@dataclass
class VideoRestorationOutput(BaseOutput):
    """output: the written video (or frame folder); tracks: one dict per track (id, first/last frame, length,
    restored, references, blind); seconds per step; resumed_frames: frames taken from an earlier run's chunks."""

    output: Path
    num_frames: int
    fps: float
    tracks: list[dict[str, Any]]
    seconds: dict[str, float]
    resumed_frames: int


def work_folder(output: str | os.PathLike) -> Path:
    """The default work folder of an output: `.<name>.partial` beside it."""
    out = Path(output)
    return out.parent / f".{out.name}.partial"


def _contiguous(analysis: VideoAnalysis) -> tuple[list[list[tuple[int, int]]], list[np.ndarray]]:
    """Per frame the (track, position) of its faces, with every track made continuous: (first..last frames) and
    its smoothed points linearly interpolated over the frames the detector missed."""
    faces: list[list[tuple[int, int]]] = [[] for _ in range(analysis.num_frames)]
    points = []
    for k, (track, pts) in enumerate(zip(analysis.tracks, analysis.smoothed)):
        frames = np.asarray(track.frames)
        full = np.arange(frames[0], frames[-1] + 1)
        flat = pts.reshape(len(frames), -1)  # (N, 10)
        filled = np.stack([np.interp(full, frames, flat[:, c]) for c in range(flat.shape[1])], axis=1)
        points.append(filled.reshape(len(full), 5, 2))
        for i, t in enumerate(full):
            faces[int(t)].append((k, i))
    return faces, points


def _fade(position: int, length: int, first: int, last: int, num_frames: int, fade_frames: int) -> float:
    """Paste-mask weight of a face at `position` of a track covering frames first..last."""
    if fade_frames <= 0:
        return 1.0
    w = 1.0
    if first > 0:
        w = min(w, (position + 1) / (fade_frames + 1))
    if last < num_frames - 1:
        w = min(w, (length - position) / (fade_frames + 1))
    return float(w)


def _match_references(pipeline: Any, analysis: VideoAnalysis, references: Any, max_references: int,
                      ref_threshold: float | None) -> list[Any]:
    """Step 2: per track, a ReferencePool of its chosen references (None: blind)."""
    from honestface.pipelines import ReferencePool
    from honestface.pipelines.honestface_pipeline import REF_THRESHOLDS

    if references is None or not getattr(pipeline, "uses_references", True):
        return [None] * len(analysis.tracks)
    pool = references if isinstance(references, ReferencePool) else \
        ReferencePool(list(references), pipeline.identity_encoder, lambda: pipeline.detector)
    if ref_threshold is None:
        ref_threshold = REF_THRESHOLDS.get(getattr(pool.identity_encoder, "name", ""), 0.5)
    chosen, built = [], {}  # tracks matched to the same references share one pool (embedded once)
    for track in analysis.tracks:
        emb = track.mean_embedding()
        idx = tuple([] if emb is None else pool.match(emb, max_references, ref_threshold))
        if idx and idx not in built:
            built[idx] = ReferencePool([pool.crops[i] for i in idx], pool.identity_encoder,
                                       ids=[pool.ids[i] for i in idx], aligned=True)
        chosen.append(built[idx] if idx else None)
    return chosen


def _restore_chunk(pipeline: Any, frames: list[np.ndarray], start: int, faces: list[list[tuple[int, int]]],
                   points: list[np.ndarray], analysis: VideoAnalysis, pools: list[Any], call: dict[str, Any],
                   fade_frames: int, mask: np.ndarray) -> list[np.ndarray]:
    """Step 3 for frames[start:start + len(frames)] -> the output frames."""
    from honestface.face import align_face, paste_back

    size = pipeline.resolution
    items = []  # (track, frame, crop (R, R, 3) uint8, M (2, 3), mask weight)
    for j, frame in enumerate(frames):
        for k, i in faces[start + j]:
            if not analysis.restored[k]:
                continue
            crop, m = align_face(frame, points[k][i], template="ffhq", size=size)
            first, last = analysis.tracks[k].frames[0], analysis.tracks[k].frames[-1]
            items.append((k, start + j, crop, m, _fade(i, len(points[k]), first, last, analysis.num_frames,
                                                       fade_frames)))
    if not items:
        return frames
    items.sort(key=lambda x: (x[0], x[1]))  # by person, then time: a batch holds one person's consecutive frames
    refs = [pools[k] for k, *_ in items]
    out = pipeline([x[2] for x in items], references=None if all(r is None for r in refs) else refs,
                   mode="aligned", **call)
    result = []
    for j, frame in enumerate(frames):
        mine = [(x, o) for x, o in zip(items, out.images) if x[1] == start + j]
        if not mine:
            result.append(frame)
            continue
        result.append(paste_back(frame, [o for _, o in mine], np.stack([x[3] for x, _ in mine]),
                                 mask=[mask * x[4] for x, _ in mine]))
    return result


def _reference_ids(references: Any) -> list[str] | None:
    """What identifies the references in the resume state: content hashes of a pool, paths (or array hashes)."""
    import hashlib

    if references is None:
        return None
    if hasattr(references, "keys") and not isinstance(references, dict):
        return list(references.keys)
    return [os.fspath(r) if isinstance(r, (str, os.PathLike)) else
            hashlib.sha1(np.ascontiguousarray(np.asarray(r)).tobytes()).hexdigest() for r in references]


def _state(source: str, info: Any, fingerprint: dict[str, Any]) -> dict[str, Any]:
    p = Path(source)
    st = p.stat()
    return {"version": 1, "source": str(p.resolve()), "size": st.st_size if p.is_file() else None,
            "mtime_ns": st.st_mtime_ns, "num_frames": info.num_frames, "fingerprint": fingerprint}


def _open_work(work: Path, state: dict[str, Any], overwrite: bool) -> None:
    """Create the work folder, or keep it when it belongs to this very call (a resume)."""
    if work.exists():
        try:
            old = json.loads((work / STATE_FILE).read_text())
        except (OSError, ValueError):
            old = None
        if old == json.loads(json.dumps(state)):
            return
        if not overwrite:
            raise VideoError(f"{work} holds an unfinished run of another source or other settings: remove it, or "
                             "pass overwrite=True (--overwrite) to discard it")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    atomic_write_text(work / STATE_FILE, json.dumps(state, indent=1))


def restore_video(pipeline: Any, source: str | os.PathLike, output: str | os.PathLike, *, references: Any = None,
                  tracking: TrackingOptions | None = None, identity_encoder: Any = None, batch_size: int | None = None,
                  seed: int = 0, color_fix: str = "wavelet", max_references: int = 4, ref_threshold: float | None = None,
                  mask_kind: str = "ellipse", fade_frames: int = 2, chunk_frames: int = 32, crf: int = 18,
                  lossless: bool = False, fps: float | None = None, work_dir: str | os.PathLike | None = None,
                  fingerprint: dict[str, Any] | None = None, overwrite: bool = False,
                  progress: bool = True) -> VideoRestorationOutput:
    """Restore every face of `source` (a video file or a folder of frames, `fps` for a folder: default 25) into
    `output` (a video file, its container by suffix, or a folder of PNG frames); the steps are in the module
    docstring. pipeline: a HonestFace / VSPBFR / ONNX restoration pipeline with a detector. references: None, a
    list of reference images, or a ReferencePool of several people. identity_encoder: for linking tracks (default:
    the pipeline's, else dlib). fingerprint: what else makes the result (model, dtype) for resuming."""
    from tqdm.auto import tqdm

    from honestface.face import build_identity_encoder
    from honestface.face.paste import crop_mask

    t0 = time.perf_counter()
    source, output = os.fspath(source), Path(output)
    batch_size = pipeline.default_batch_size if batch_size is None else batch_size  # 1 on a CPU, 4 on a GPU
    if chunk_frames < 1 or batch_size < 1 or fade_frames < 0:
        raise ValueError(f"chunk_frames >= 1, batch_size >= 1 and fade_frames >= 0 are required, got {chunk_frames}, "
                         f"{batch_size}, {fade_frames}")
    if output.exists() and not overwrite:
        raise VideoError(f"{output} already exists (pass overwrite=True / --overwrite to replace it)")
    if output.resolve() == Path(source).resolve():
        raise VideoError(f"the output {output} is the input: choose another output path")
    info = probe_video(source, fps=fps)
    if pipeline.detector is None:
        raise ValueError("video restoration needs a face detector (the pipeline's detector=...)")
    tracking = tracking or TrackingOptions()
    if identity_encoder is None:
        identity_encoder = getattr(pipeline, "identity_encoder", None) or "dlib"
    if isinstance(identity_encoder, str):
        identity_encoder = build_identity_encoder(identity_encoder)
    call = {"batch_size": batch_size, "color_fix": color_fix, "seed": seed, "max_references": max_references,
            "ref_threshold": -1.0}  # -1: each track's pool holds only its chosen references
    state = _state(source, info, {"tracking": tracking.to_dict(), "seed": seed, "color_fix": color_fix,
                                  "max_references": max_references, "ref_threshold": ref_threshold,
                                  "mask_kind": mask_kind, "fade_frames": fade_frames, "chunk_frames": chunk_frames,
                                  "resolution": pipeline.resolution, "references": _reference_ids(references),
                                  **(fingerprint or {})})
    work = Path(work_dir) if work_dir is not None else work_folder(output)
    _open_work(work, state, overwrite)
    seconds: dict[str, float] = {}

    # 1. analyse (or reuse the analysis of the interrupted run)
    if (work / ANALYSIS_FILE).is_file():
        analysis = VideoAnalysis.from_dict(json.loads((work / ANALYSIS_FILE).read_text()))
    else:
        with tqdm(total=info.num_frames, desc="analysing", unit="frame", disable=not progress) as bar:
            analysis = analyse_video(source, pipeline.detector, identity_encoder, tracking, info=info,
                                     progress=bar.update)
        atomic_write_text(work / ANALYSIS_FILE, json.dumps(analysis.to_dict()))
    if analysis.num_frames != info.num_frames:
        raise VideoError(f"{source}: decoded {analysis.num_frames} frames, the container says {info.num_frames}")
    seconds["analyse"] = time.perf_counter() - t0

    # 2. references, once per track
    pools = _match_references(pipeline, analysis, references, max_references, ref_threshold)

    # 3. restore chunk by chunk (finished chunks of an interrupted run are kept)
    t1 = time.perf_counter()
    faces, points = _contiguous(analysis)
    mask = crop_mask(pipeline.resolution, mask_kind, template="ffhq")
    chunks = [work / f"chunk_{s:06d}.mkv" for s in range(0, info.num_frames, chunk_frames)]
    resumed = sum(min(chunk_frames, info.num_frames - i * chunk_frames) for i, c in enumerate(chunks) if c.is_file())
    with tqdm(total=info.num_frames, desc="restoring", unit="frame", disable=not progress) as bar:
        bar.update(resumed)
        frames: list[np.ndarray] = []
        for t, frame in enumerate(read_frames(source, fps=None if Path(source).is_file() else info.fps)):
            index = t // chunk_frames
            if chunks[index].is_file():
                continue
            frames.append(frame)
            if len(frames) == min(chunk_frames, info.num_frames - index * chunk_frames):
                done = _restore_chunk(pipeline, frames, index * chunk_frames, faces, points, analysis, pools, call,
                                      fade_frames, mask)
                with VideoWriter(chunks[index], info.fps, lossless=True) as writer:
                    for f in done:
                        writer.write(f)
                bar.update(len(frames))
                frames = []
    seconds["restore"] = time.perf_counter() - t1

    # 4. encode the output from the chunks, with the source's audio
    t2 = time.perf_counter()
    with VideoWriter(output, info.fps, crf=crf, lossless=lossless,
                     audio_from=source if is_video_file(source) else None) as writer:
        for chunk in chunks:
            for f in read_frames(chunk):
                writer.write(f)
    shutil.rmtree(work, ignore_errors=True)
    seconds["encode"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    tracks = analysis.track_summary()
    for line, pool in zip(tracks, pools):
        line["references"] = [] if pool is None else list(pool.ids)
        line["blind"] = pool is None
    return VideoRestorationOutput(output=output, num_frames=info.num_frames, fps=float(info.fps), tracks=tracks,
                                  seconds={k: round(v, 3) for k, v in seconds.items()}, resumed_frames=resumed)
