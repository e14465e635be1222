"""Video restoration: temporal consistency and seconds per frame of `restore_video` against independent per-frame
restoration of the same clip, printed as JSON.

    python benchmarks/video.py                          # the quickstart's model when it exists, else a random tiny one
    python benchmarks/video.py --model outputs/quickstart/runs/honestface/final --frames 48
    python benchmarks/video.py --model M --device cuda --dtype fp16 --blind

The clip is `honestface.video.demo_clip.make_demo_clip` (a pan across insightface's t1.jpg group photo, face-free
frames, a zoom on the astronaut; each frame degraded with the tiny preset; lossless). Four videos are compared on
it, all with the same pipeline, seed and references (the faces of the two clean source photos, a pool matched per
face or per track; `--blind`: none):
- `input`: the degraded clip itself;
- `per_frame`: every frame restored on its own in photo mode (`pipeline(frame, mode="photo")`: detection,
  alignment and reference matching per frame), what an image restorer run over the frames gives;
- `tracked`: `restore_video` with smoothing "none" (tracks, one reference match per track, fades), to separate the
  effect of tracking from that of smoothing;
- `temporal`: `restore_video` with its default Gaussian smoothing of each track's alignment.
For each: `face_warp_error` (honestface.metrics.temporal, x1e3, lower is steadier) with the flow of the clean clip
and its MTCNN face boxes, PSNR to the clean frames over the frames with faces, and seconds per frame (analysis,
restoration and encoding included; one run, the clip is short: compare the methods, not the machines).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # works without `pip install -e .`
QUICKSTART_MODEL = ROOT / "outputs" / "quickstart" / "runs" / "honestface" / "final"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _model(path: str | None, cache: Path) -> tuple[str, str]:
    """(folder, what it is): --model, the quickstart's export, or a random tiny model saved into `cache`."""
    if path:
        return path, "given"
    if (QUICKSTART_MODEL / "honestface_config.json").is_file():
        return str(QUICKSTART_MODEL), "quickstart"
    from honestface.models import HonestFace

    folder = cache / "tiny_random"
    if not (folder / "honestface_config.json").is_file():
        torch.manual_seed(0)
        HonestFace.from_preset("tiny", with_discriminator=False).save_pretrained(folder)
    return str(folder), "tiny_random"


def _reference_pool(pipe, detector):
    """The faces of the clip's two clean source photos, as one pool of several people."""
    from honestface.data import samples
    from honestface.face import extract_faces
    from honestface.pipelines import ReferencePool

    crops = [f.crop for photo in (samples.group_t1(), samples.load_sample("astronaut"))
             for f in extract_faces(photo, detector, size=pipe.resolution * 2)]
    return ReferencePool(crops, pipe.identity_encoder, aligned=True, ids=[f"ref{i}" for i in range(len(crops))])


def _psnr(a: list[np.ndarray], b: list[np.ndarray], frames: list[int]) -> float:
    mse = np.mean([np.mean((a[t].astype(np.float64) - b[t].astype(np.float64)) ** 2) for t in frames])
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="HonestFace model folder (default: the quickstart's, else a random tiny model)")
    p.add_argument("--frames", type=int, default=24, help="clip length (frames at 12 fps)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32")
    p.add_argument("--blind", action="store_true", help="no references")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from honestface.face import build_detector
    from honestface.metrics.temporal import face_warp_errors
    from honestface.pipelines import HonestFacePipeline
    from honestface.video.analysis import TrackingOptions
    from honestface.video.demo_clip import make_demo_clip
    from honestface.video.io import read_frames
    from honestface.video.restore import restore_video

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = make_demo_clip(tmp / "clip", num_frames=args.frames, fps=Fraction(12), seed=0, audio=True)
        model, kind = _model(args.model, tmp)
        pipe = HonestFacePipeline.from_pretrained(model, detector="mtcnn", identity="dlib", device=args.device,
                                                  dtype=_DTYPES[args.dtype])
        pipe.merge_lora()
        detector = build_detector("mtcnn")
        refs = None if args.blind else _reference_pool(pipe, detector)
        gt, lq = list(read_frames(clip.gt)), list(read_frames(clip.lq))
        boxes = [np.array([d.box for d in detector.detect(f)]).reshape(-1, 4) for f in gt]
        faces = [t for t in range(len(gt)) if len(boxes[t])]

        videos, seconds = {"input": lq}, {}
        t0 = time.perf_counter()
        videos["per_frame"] = [pipe(f, references=refs, mode="photo", color_fix="wavelet", seed=0).images[0]
                               for f in lq]
        seconds["per_frame"] = time.perf_counter() - t0
        tracks = {}
        for name, smoothing in (("tracked", "none"), ("temporal", "gaussian")):
            out = tmp / f"{name}.mkv"
            t0 = time.perf_counter()
            result = restore_video(pipe, clip.lq, out, references=refs, tracking=TrackingOptions(smoothing=smoothing),
                                   lossless=True, progress=False)
            seconds[name] = time.perf_counter() - t0
            videos[name] = list(read_frames(out))
            tracks[name] = len(result.tracks)
        warp = face_warp_errors(videos, gt, boxes)
    report = {
        "command": " ".join(["python benchmarks/video.py", *sys.argv[1:]]),
        "model": kind, "device": args.device, "dtype": args.dtype, "references": not args.blind,
        "clip": {"frames": len(gt), "frames_with_faces": len(faces), "size": [gt[0].shape[1], gt[0].shape[0]],
                 "fps": 12},
        "torch_threads": torch.get_num_threads(),
        "methods": {name: {"face_warp_error": round(warp[name].value, 4), "pairs": warp[name].count,
                           "psnr_face_frames": round(_psnr(frames, gt, faces), 3),
                           **({"seconds_per_frame": round(seconds[name] / len(gt), 4)} if name in seconds else {}),
                           **({"tracks": tracks[name]} if name in tracks else {})}
                    for name, frames in videos.items()},
    }
    m = report["methods"]
    report["temporal_vs_per_frame_warp_error"] = round(m["temporal"]["face_warp_error"] /
                                                       m["per_frame"]["face_warp_error"], 4)
    report["temporal_vs_per_frame_seconds"] = round(m["temporal"]["seconds_per_frame"] /
                                                    m["per_frame"]["seconds_per_frame"], 4)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
