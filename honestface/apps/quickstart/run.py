"""The quickstart run: bundled faces -> small-scale recipe -> restoration with references -> evaluation -> report.

Steps (`run_quickstart`), each resumable:
1. data: every face of the photos that ship inside installed packages, aligned at `size`; two people held out
   (`honestface.data.sample_dataset.build_sample_split`); references are augmented views of each person's crop;
2. training: `honestface.training.recipe.run_small_scale_recipe` (vae -> vre -> honestface, tiny configs);
3. restoration: the held-out degraded faces in aligned mode with their references, and a degraded copy of the
   t1.jpg group photo in photo mode (detect, restore, paste back);
4. evaluation: `honestface.metrics.evaluate_folders` on the LQ inputs and the restored faces against the GT;
5. report: `report.html` (loss curves, image grids, the group photo, the metric table), `summary.json` (settings,
   software, per-metric comparison with bootstrap intervals: bit-identical for the same command, machine and
   software) and `run.json` (times, stage folders).

Our choices: the wavelet colour fix on the restored faces (the pipeline's photo-mode default; the tiny model's
colour drifts), the held-out people, the group photo's degradation (downscale x0.5, noise, JPEG 35, upscale back)
and the step counts are the quickstart's own, documented in the report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["QUICKSTART_METRICS", "STEPS", "QuickstartResult", "check_output_folder", "degrade_photo", "run_quickstart"]

STAMP = "quickstart.json"
DEGRADATION = "tiny"  # the held-out faces' degradation: the one configs/tiny/*.yaml train with
STEPS = {"vae": 500, "vre": 240, "honestface": 200}  # the default run's training steps per recipe stage
QUICKSTART_METRICS = ("psnr", "ssim", "lmd_dlib68", "ald", "ids_dlib", "ref_ids")  # names: docs/metrics.md


@dataclass
class QuickstartResult:
    output: Path
    settings: dict[str, Any]
    split: Any  # SampleSplit
    stages: dict[str, Any]  # stage -> StageResult
    restored: Path
    photo: dict[str, Any]  # "lq", "restored": paths; "faces": how many faces were restored
    evaluation: Any  # EvaluationResult
    summary: dict[str, Any]  # the content of summary.json (settings, environment, per-metric comparisons)
    timings: dict[str, float] = field(default_factory=dict)
    report: Path | None = None


def check_output_folder(out: Path, stamp: str = STAMP) -> None:
    """Refuse a non-empty folder that an earlier quickstart of the same kind did not write (no `stamp` file)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / stamp).is_file():
        kind = "quickstart" if stamp == STAMP else "multi-seed quickstart"
        raise ValueError(f"{out} exists and is not a {kind} output folder; pass another --output")


def degrade_photo(photo: np.ndarray, seed: int = 0) -> np.ndarray:
    """A low-quality copy of a whole photo (H, W, 3) uint8: downscale x0.5, Gaussian noise, JPEG 35, upscale back."""
    import cv2

    h, w = photo.shape[:2]
    rng = np.random.default_rng(seed)
    small = cv2.resize(photo, (w // 2, h // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = np.clip(small + rng.normal(0, 6, small.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 35])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the photo")
    small = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@contextmanager
def _accelerate_cpu(on: bool) -> Iterator[None]:
    """accelerate's own switch to train on the CPU although a GPU is present (set only inside the block)."""
    old = os.environ.get("ACCELERATE_USE_CPU")
    if on:
        os.environ["ACCELERATE_USE_CPU"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = old


def _restore_test_faces(pipe: Any, split: Any, out: Path, seed: int) -> list[dict[str, Any]]:
    """Aligned-mode restoration of every held-out LQ face with the other views of its person as references."""
    from honestface.io import list_images, read_image, write_image

    rows = []
    for lq_path in list_images(split.test_lq, recursive=True):
        rel = lq_path.relative_to(split.test_lq)
        refs = split.references(rel)
        result = pipe([read_image(lq_path)], references=[[str(r) for r in refs]], seed=seed, ref_threshold=0.0,
                      color_fix="wavelet")
        write_image(out / rel, result.images[0], overwrite=True)
        info = result.faces[0][0]
        rows.append({"face": rel.as_posix(), "references": [Path(r).name for r in info.references],
                     "blind": info.blind})
    return rows


def _restore_photo(pipe: Any, out: Path, seed: int) -> dict[str, Any]:
    from honestface.data.samples import load_sample
    from honestface.io import write_image

    lq = degrade_photo(load_sample("group_t1"), seed)
    result = pipe([lq], mode="photo", seed=seed)
    return {"lq": write_image(out / "group_t1_lq.png", lq, overwrite=True),
            "restored": write_image(out / "group_t1_restored.png", result.images[0], overwrite=True),
            "faces": sum(f.restored for f in result.faces[0])}


def run_quickstart(output: str | os.PathLike = "outputs/quickstart", size: int = 64, steps: int = STEPS["honestface"],
                   vae_steps: int = STEPS["vae"], vre_steps: int = STEPS["vre"], device: str | None = None, seed: int = 0,
                   train_views: int = 24, test_views: int = 4, overrides: dict[str, list[str]] | None = None,
                   flip: bool = False, test_identities: tuple[str, ...] | None = None,
                   exclude_identities: tuple[str, ...] = (),
                   progress: Callable[[str], None] | None = print) -> QuickstartResult:
    """Run the whole quickstart into `output` (resuming an earlier run there); returns everything it made.

    overrides: extra config items per recipe stage, e.g. {"honestface": ["train.ema_decay=0.99"]}; flip: mirrored
    training views (landmarks follow); test_identities / exclude_identities: another held-out split (the
    validation runs of `honestface.apps.quickstart.levers`; default: the quickstart's two test people)."""
    import torch

    from honestface.apps.quickstart.report import quickstart_summary, write_quickstart_report
    from honestface.data.sample_dataset import DEFAULT_TEST_IDENTITIES, build_sample_split
    from honestface.metrics.evaluate import evaluate_folders
    from honestface.pipelines import HonestFacePipeline
    from honestface.training.recipe import run_small_scale_recipe

    say = progress or (lambda _: None)
    out = Path(output)
    check_output_folder(out)
    if size < 32 or size % 8:
        raise ValueError(f"size must be a multiple of 8 and at least 32, got {size}")
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = {"size": size, "degradation": DEGRADATION, "steps": {"vae": vae_steps, "vre": vre_steps, "honestface": steps}, "seed": seed,
                "train_views": train_views, "test_views": test_views, "flip": flip, "device": dev.type}
    if overrides:
        settings["overrides"] = {k: list(v) for k, v in sorted(overrides.items()) if v}
    if exclude_identities:
        settings["excluded_identities"] = list(exclude_identities)
    (out / STAMP).write_text(json.dumps(settings, indent=1))
    timings: dict[str, float] = {}

    # 1. Data: aligned crops of every bundled face; two people held out; fixed degraded copies of their views.
    t0 = time.perf_counter()
    split = build_sample_split(out / "data", size=size, train_views=train_views, test_views=test_views,
                               preset=DEGRADATION, seed=seed, flip=flip, exclude_identities=exclude_identities,
                               test_identities=test_identities or DEFAULT_TEST_IDENTITIES)
    timings["data"] = time.perf_counter() - t0
    say(f"[data] {len(split.train_identities)} training people, held out: {', '.join(split.test_identities)}")

    # 2. Training: the small-scale recipe (vae -> vre -> honestface); each stage resumes or is skipped.
    t0 = time.perf_counter()
    res = [f"data.resolution={size}"]
    if device == "cpu":
        res.append("train.mixed_precision=no")
    stage_overrides = {s: [*res, *(overrides or {}).get(s, [])] for s in ("vae", "vre", "honestface")}
    with _accelerate_cpu(device == "cpu"):
        stages = run_small_scale_recipe(split.train, out / "runs", settings["steps"], stage_overrides, progress=say)
    timings["training"] = time.perf_counter() - t0

    # 3. Restoration: held-out faces with references (aligned mode) and the degraded group photo (photo mode).
    t0 = time.perf_counter()
    pipe = HonestFacePipeline.from_pretrained(stages["honestface"].final, detector="mtcnn", device=dev)
    restored = out / "restored"
    rows = _restore_test_faces(pipe, split, restored, seed)
    photo = _restore_photo(pipe, out / "photo", seed)
    timings["restoration"] = time.perf_counter() - t0
    say(f"[restore] {len(rows)} held-out faces, group photo with {photo['faces']} faces")

    # 4. Evaluation: the LQ inputs and the restorations against the ground truth, same metrics.
    t0 = time.perf_counter()
    evaluation = evaluate_folders({"LQ input": split.test_lq, "HonestFace (tiny)": restored}, split.test_hq,
                                  refs=split.test_hq, lq=split.test_lq, metrics=list(QUICKSTART_METRICS),
                                  device=str(dev), identity="dlib")
    timings["evaluation"] = time.perf_counter() - t0

    # 5. Report.
    result = QuickstartResult(out, settings, split, stages, restored, photo, evaluation, {}, timings)
    result.summary = quickstart_summary(result, len(rows))
    result.report = write_quickstart_report(result, rows)
    say(f"[report] {result.report}")
    return result
