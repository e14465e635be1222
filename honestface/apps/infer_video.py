"""Video inference behind `scripts/infer.py --input clip.mp4 --output out.mp4` (and a folder of frames with
`--frames`): the `video.*` and `infer.*` config keys -> `honestface.video.restore_video`.

Our choices for the run (the restoration itself is described in honestface/video/restore.py):
- An input is a video when `infer.input` is a file with a video suffix (`honestface.video.io.VIDEO_SUFFIXES`), or
  any folder when `video.frames` is true (its images are the frames, in natural order, at `video.fps`).
- The output is a video file (container by suffix) or, without a video suffix, a folder of PNG frames. It may not
  be the input; an existing output stops the run (exit 2) unless `infer.overwrite`, or is left as it is with
  `infer.skip_existing`.
- References (`infer.references`): an image or a folder of images of one or several people; each track takes the
  ones of its person (`infer.ref_threshold`, `infer.max_references`), so `infer.reference_mode` makes no difference
  here. A blind family (VSPBFR) ignores them with a warning.
- Photo-mode settings apply: the face detector (`face.detector`), `face.min_size` per track, `infer.color_fix`
  (auto: wavelet), `infer.seed`, `infer.batch_size` faces per model call, `infer.precision` / `device`.
- One process: a video is not split between `accelerate launch` processes (exit 2 when started with several).
- `<output>.results.json` beside the output (`out.mp4` -> `out.results.json`): settings, frame count and rate, per
  track its frames, references and whether it was restored, seconds per step and frames per second. An interrupted
  run keeps its finished chunks in `.<output name>.partial/`; the same command resumes from them.
- Exit codes: 0 done or skipped, 1 the run failed midway (e.g. a frame that cannot be decoded: one `error:` line;
  the finished chunks are kept), 2 a bad command line, config, path or model (nothing written).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from honestface.apps.infer_plan import InferenceSetupError
from honestface.io import atomic_write_text, list_images

__all__ = ["is_video_input", "results_path", "run_video_inference"]


def is_video_input(cfg: DictConfig) -> bool:
    """Whether `infer.input` is a video file, or a folder of frames (`video.frames`)."""
    from honestface.video.io import is_video_file

    src = cfg.infer.input
    return src is not None and (bool(cfg.video.frames) or (is_video_file(src) and not Path(src).is_dir()))


def results_path(output: str | os.PathLike) -> Path:
    """`out.mp4` -> `out.results.json`, a frame folder `out/` -> `out.results.json`, both beside the output."""
    out = Path(output)
    return out.parent / f"{out.stem if out.suffix else out.name}.results.json"


def _setup(cfg: DictConfig) -> tuple[Any, Path, Path, list[str] | None] | None:
    """Every check before loading a model -> (source info, input, output, reference files or None); None: the
    output exists and `infer.skip_existing` leaves it."""
    from honestface.apps.infer_model import finish_model_setup, require_keys, setup_model
    from honestface.video.io import VIDEO_SUFFIXES, VideoError, is_video_file, probe_video

    icfg = cfg.infer
    require_keys(cfg)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InferenceSetupError("a video is restored by one process: run scripts/infer.py without accelerate "
                                  "launch (or with --num_processes 1)")
    source, output = Path(icfg.input).expanduser(), Path(icfg.output).expanduser()
    if not source.exists():
        raise InferenceSetupError(f"input not found: {source}")
    if cfg.video.frames and not source.is_dir():
        raise InferenceSetupError(f"video.frames=true (--frames) needs a folder of frames, got the file {source}")
    try:
        info = probe_video(source, fps=cfg.video.fps)
    except VideoError as e:
        raise InferenceSetupError(str(e)) from None
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise InferenceSetupError(f"the output {output} must not be the input {source} or inside it")
    if output.suffix and not is_video_file(output):
        raise InferenceSetupError(f"output {output}: a video needs a video file ({', '.join(VIDEO_SUFFIXES)}) or a "
                                  "folder for PNG frames (no suffix)")
    if output.exists() and not (icfg.overwrite or icfg.skip_existing):
        raise InferenceSetupError(f"{output} already exists (pass --skip-existing to leave it, or --overwrite to "
                                  "replace it)")
    if output.exists() and not icfg.overwrite:
        return None  # --skip-existing: nothing to do, nothing loaded
    if output.is_dir() and any(output.iterdir()):
        raise InferenceSetupError(f"{output} is a folder that holds files: a frame folder output is never replaced "
                                  "(choose another --output or remove it)")
    pipeline, released = setup_model(cfg)
    refs = None
    if icfg.references is not None:
        refs = [str(p) for p in list_images(icfg.references)] if Path(icfg.references).is_dir() \
            else [str(icfg.references)]
        if not refs:
            raise InferenceSetupError(f"no image files in the references {icfg.references}")
    finish_model_setup(cfg, pipeline, released)
    return info, source, output, refs


def _summary(cfg: DictConfig, model: str, source: Path, output: Path, info: Any, status: str,
             reason: str | None, result: Any, started: float) -> dict[str, Any]:
    from honestface.apps.infer_model import model_architecture

    seconds = round(time.time() - started, 3)
    line: dict[str, Any] = {
        "version": 1, "kind": "video", "input": str(source), "output": str(output), "model": model,
        "model_folder": cfg.model.pretrained, "onnx": cfg.infer.onnx, "architecture": model_architecture(cfg),
        "references": cfg.infer.references, "device": cfg.infer.device, "precision": cfg.infer.precision,
        "batch_size": cfg.infer.batch_size, "seed": cfg.infer.seed, "video": dict(cfg.video),
        "num_frames": info.num_frames, "fps": float(info.fps), "has_audio": bool(info.has_audio),
        "status": status, "reason": reason, "seconds": seconds}
    if result is not None:
        line.update(tracks=result.tracks, step_seconds=result.seconds, resumed_frames=result.resumed_frames,
                    frames_per_second=round(info.num_frames / max(result.seconds["total"], 1e-9), 3))
    return line


def run_video_inference(cfg: DictConfig) -> int:
    """Restore the video `infer.input` into `infer.output` (module docstring) -> exit code 0 / 1 / 2."""
    from honestface.video.analysis import TrackingOptions

    started = time.time()
    cfg = copy.deepcopy(cfg)
    model = cfg.model.pretrained if cfg.infer.onnx is None else cfg.infer.onnx
    try:
        setup = _setup(cfg)
    except InferenceSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if setup is None:
        print(f"skipped: {cfg.infer.output} exists (--skip-existing)", file=sys.stderr)
        return 0
    info, source, output, refs = setup
    report = results_path(output)
    import torch

    from honestface.apps.infer_model import _load_pipeline, _reference_pool
    from honestface.video.io import VideoError
    from honestface.video.restore import restore_video

    icfg, vcfg = cfg.infer, cfg.video
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if icfg.device == "auto" \
        else torch.device(icfg.device)
    pipe = _load_pipeline(cfg, device)
    if icfg.batch_size is None:  # recorded in the report as used
        icfg.batch_size = pipe.default_batch_size
    references = None
    if refs is not None:
        references = _reference_pool(pipe, cfg, refs, {})[0]
        if references is None:
            print(f"error: no readable reference image in {icfg.references}", file=sys.stderr)
            return 2
    tracking = TrackingOptions(iou_threshold=vcfg.iou_threshold, identity_threshold=vcfg.identity_threshold,
                               identity_veto=vcfg.identity_veto,
                               max_gap=vcfg.max_gap, min_track_length=vcfg.min_track_length,
                               smoothing=vcfg.smoothing, sigma=vcfg.sigma, min_cutoff=vcfg.min_cutoff,
                               beta=vcfg.beta, min_face_size=cfg.face.min_size)
    fingerprint = {"model": str(model), "model_folder": str(cfg.model.pretrained), "precision": icfg.precision,
                   "detector": cfg.face.detector, "identity": cfg.face.identity}
    try:
        result = restore_video(
            pipe, source, output, references=references, tracking=tracking, batch_size=icfg.batch_size,
            seed=icfg.seed, color_fix="wavelet" if icfg.color_fix == "auto" else icfg.color_fix,
            max_references=max(1, icfg.max_references), ref_threshold=icfg.ref_threshold,
            fade_frames=vcfg.fade_frames, chunk_frames=vcfg.chunk_frames, crf=vcfg.crf, lossless=vcfg.lossless,
            fps=vcfg.fps, fingerprint=fingerprint, overwrite=icfg.overwrite)
    except (VideoError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())
        atomic_write_text(report, json.dumps(_summary(cfg, str(model), source, output, info, "failed", reason,
                                                      None, started), indent=1) + "\n")
        print(f"error: {reason}", file=sys.stderr)
        return 1
    summary = _summary(cfg, str(model), source, output, info, "ok", None, result, started)
    atomic_write_text(report, json.dumps(summary, indent=1) + "\n")
    restored = sum(t["restored"] for t in result.tracks)
    print(f"restored {restored} of {len(result.tracks)} face track(s) in {info.num_frames} frames "
          f"({summary['frames_per_second']} frames/s) -> {output} ({report})", file=sys.stderr)
    return 0
