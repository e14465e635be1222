"""Data preparation: raw photos -> aligned faces, HQ faces -> a fixed synthetic test set, identity splits.

The training and test sets of HonestFace (CelebRef-HQ, Reface-HQ; arXiv 2505.18469) and of its predecessors
(FFHQ, CelebA-Test) are 512x512 faces aligned like FFHQ (Karras et al., CVPR 2019) by five landmarks; synthetic
test pairs follow a fixed degradation (OSDFace's CelebA-Test uses DAEFR's pipeline, our default preset). These
functions are the library side of `scripts/prepare_data.py`; notebooks and the quickstart call them directly.

- `align_folder`: every face of every photo (a folder, recursive, or one file) -> FFHQ-style crop + landmark
  sidecar (`honestface.data.sidecar`: scheme, landmarks and points5 in crop pixels, size, source, box, matrix).
- `make_testset`: HQ faces -> `hq/<rel>.png` + `lq/<rel>.png`, image i (sorted order) degraded with seed
  `sample_seed(seed, i)`, plus `manifest.json` with every sampled degradation parameter.
- `split_identity_folders`: one folder per identity -> identity-disjoint `train.txt` / `test.txt`.

Our choices:
- Crops are named `<stem>_<i>.png` (i = detector score order) or `<stem>.png` when the rule picks one face. The
  output is flat unless `keep_structure`; when two photos share a stem, the name takes the relative folder
  (`a/x.jpg` -> `a__x`) and, if still ambiguous, the extension (`x_jpg`).
- Safety: OUTPUT must not be the input folder, lie inside it or contain it (a recursive re-run would read its
  own crops, and outputs could land on inputs); for a single-file input OUTPUT must not be the photo's folder.
  A non-empty OUTPUT is only written to when it is our own output made with the same settings.
- Resumable: align appends one JSON line per finished photo to `OUTPUT/.prepare_align.jsonl` (its first line holds
  the settings). A photo is skipped when its record exists and all its crops and sidecars do; a photo without a
  face is recorded too; an unreadable one is recorded with its size and mtime and retried once the file changes.
  make-testset appends to `OUTPUT/.make_testset.jsonl` and writes `manifest.json` when the set is complete.
  Image files are written atomically (`honestface.io.write_image`).
- make-testset: HQ faces are resized to `size` (area down, cubic up) and stored 8-bit; when a draw makes the LQ
  gray, the stored HQ is made gray too (GFPGAN's `gt_gray`, as the training datasets do).
- The test set's settings include the library version and a hash of the sorted HQ file list (seeds follow that
  order), so resuming with other settings, another version or a changed HQ folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from honestface.data.sidecar import write_sidecar
from honestface.io import atomic_write_text, list_images, read_image, write_image
from honestface.log import get_logger

log = get_logger(__name__)

ALIGN_RECORDS = ".prepare_align.jsonl"
TESTSET_MANIFEST = "manifest.json"
TESTSET_PROGRESS = ".make_testset.jsonl"
DEFAULT_THRESHOLDS = {"mtcnn": 0.9}  # our choice: keeps the 6 faces of insightface's t1.jpg, drops 2 false ones


@dataclass
class AlignReport:
    """What one `align_folder` run did. `no_face` / `failed` list photos (relative paths) handled in this run."""

    photos: int = 0
    new: int = 0
    skipped: int = 0
    skipped_failed: int = 0  # of `skipped`: unreadable before and unchanged since
    faces: int = 0
    no_face: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # relative path -> reason
    seconds: float = 0.0
    output: Path | None = None

    def summary(self) -> str:
        skipped = f"{self.skipped} skipped" + (f" ({self.skipped_failed} unreadable, unchanged)"
                                               if self.skipped_failed else "")
        return (f"{self.new} new photos, {skipped}, {self.faces} faces written, {len(self.no_face)} without a face, "
                f"{len(self.failed)} failed ({self.photos} photos in total), {self.seconds:.1f} s")


# ----------------------------------------------------------------------------------------------------- Shared helpers


def _check_separate(src: Path, out: Path, what: str) -> None:
    s, o = src.resolve(), out.resolve()
    if s == o or s in o.parents or o in s.parents:
        raise ValueError(f"output folder {out} must not be {what} {src}, lie inside it or contain it")


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line in a single write, flushed to disk (a crash leaves at most a torn last line)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn (unparsable) line from an interrupted run is ignored."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _normalise(value: Any) -> Any:
    """Settings as they read back from JSON (tuples -> lists), so saved and new settings compare equal."""
    return json.loads(json.dumps(value))


def _check_settings(saved: dict[str, Any], settings: dict[str, Any], out: Path) -> None:
    diff = [f"{k}: {saved.get(k)!r} there, {v!r} now" for k, v in settings.items() if saved.get(k) != v]
    if diff:
        raise ValueError(f"{out} was made with different settings ({'; '.join(diff)}); use a new output folder")


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# -------------------------------------------------------------------------------------------------------------- align


def _output_bases(rels: Sequence[Path], keep_structure: bool) -> dict[Path, str]:
    """Output name (relative, no face index, no suffix) of every photo; see the module docstring for the rule."""
    def flat(r: Path) -> str:
        return r.with_suffix("").as_posix().replace("/", "__")

    def nested(r: Path) -> str:
        return r.with_suffix("").as_posix()

    first = nested if keep_structure else (lambda r: r.stem)
    second = nested if keep_structure else flat
    levels: list[Callable[[Path], str]] = [first, second, lambda r: f"{second(r)}_{r.suffix[1:].lower()}"]
    counts = [Counter(level(r).casefold() for r in rels) for level in levels]
    bases = {}
    for r in rels:
        level = next((lv for lv, c in zip(levels, counts) if c[lv(r).casefold()] == 1), levels[-1])
        bases[r] = level(r)
    clash = [b for b, n in Counter(b.casefold() for b in bases.values()).items() if n > 1]
    if clash:
        raise ValueError(f"several photos map to the output name {clash[0]!r} (file names differing only in case?); "
                         "rename them or use keep_structure")
    return bases


def _align_state(out: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Latest record per source photo of an earlier run with the same settings; None when OUTPUT is new.

    A record file holding only its settings line (a run that stopped before its first photo) counts as new.
    """
    path = out / ALIGN_RECORDS
    if not path.is_file():
        if not _is_empty(out):
            raise ValueError(f"output folder {out} is not empty and holds no {ALIGN_RECORDS}; use an empty or new folder")
        return None
    records = _read_lines(path)
    if not records or "settings" not in records[0]:
        raise ValueError(f"{path} has no settings line; it is not an align record file")
    if len(records) == 1 and all(p.name == ALIGN_RECORDS for p in out.iterdir()):
        return None
    _check_settings(records[0]["settings"], settings, out)
    return {r["source"]: r for r in records[1:] if "source" in r}


def _is_done(record: dict[str, Any] | None, out: Path, photo: Path) -> bool:
    if record is None:
        return False
    if record["status"] == "failed":
        st = photo.stat()
        return record.get("stat") == [st.st_size, st.st_mtime_ns]
    return all((out / name).is_file() for name in record["outputs"])


def align_folder(
    input: str | os.PathLike,
    output: str | os.PathLike,
    size: int = 512,
    detector: str = "mtcnn",
    landmarks: str | None = "dlib68",
    rule: str = "all",
    min_size: float = 32.0,
    threshold: float | None = None,
    template: str = "ffhq",
    keep_structure: bool = False,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> AlignReport:
    """Align every face of the photos under `input` (a folder, searched recursively, or one image file).

    detector: "mtcnn" (bundled), "dlib" (bundled), "retinaface", "scrfd"; threshold: the detector's score
    threshold (None: 0.9 for mtcnn, the backend default otherwise); min_size: smallest face (box side, photo px).
    landmarks: "dlib68" (bundled), "awing98", "insightface106" or None (sidecar without dense landmarks).
    rule: "all" | "largest" | "center" | "score" (see `honestface.face.select_faces`). template: "ffhq" | "arcface".
    progress: called with one line per processed photo. Unreadable photos give a warning and are counted.
    """
    from honestface.face import build_detector, build_landmarker, extract_faces
    from honestface.face.detection import SELECT_RULES

    t0 = time.time()
    src, out = Path(input), Path(output)
    if not src.exists():
        raise FileNotFoundError(f"input not found: {src}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if rule not in SELECT_RULES:
        raise ValueError(f"unknown face selection rule {rule!r}; allowed: {', '.join(SELECT_RULES)}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output must be a folder, got the file {out}")
    if src.is_dir():
        root, photos = src, list_images(src, recursive=True)
        if not photos:
            raise ValueError(f"no images found in {src}")
        _check_separate(src, out, "the input folder")
    else:
        root, photos = src.parent, [src]
        if out.resolve() == root.resolve():
            raise ValueError(f"output folder {out} must not be the folder of the input photo {src}")
    threshold = DEFAULT_THRESHOLDS.get(detector) if threshold is None else float(threshold)
    settings = _normalise({"size": size, "detector": detector, "landmarks": landmarks, "rule": rule,
                           "min_size": float(min_size), "threshold": threshold, "template": template,
                           "keep_structure": keep_structure})
    rels = [p.relative_to(root) for p in photos]
    bases = _output_bases(rels, keep_structure)
    state = _align_state(out, settings)
    is_new, state = state is None, state or {}
    report = AlignReport(photos=len(photos), output=out)
    todo = []
    for photo, rel in zip(photos, rels):
        record = state.get(rel.as_posix())
        if _is_done(record, out, photo):
            report.skipped += 1
            report.skipped_failed += record["status"] == "failed"
        else:
            todo.append((photo, rel))
    claimed = {r["base"].casefold(): s for s, r in state.items() if r.get("base")}
    for _, rel in todo:
        owner = claimed.get(bases[rel].casefold(), rel.as_posix())
        if owner != rel.as_posix():
            raise ValueError(f"output name {bases[rel]!r} of {rel.as_posix()} is already used by {owner} in {out}; "
                             "align the new photos into another folder")

    det = lm = None
    if todo:
        kwargs = {"min_size": float(min_size)} | ({} if threshold is None else {"threshold": threshold})
        det = build_detector(detector, device=device, **kwargs)
        lm = None if landmarks is None else build_landmarker(landmarks, device=device)
    records_path = out / ALIGN_RECORDS
    if is_new:  # only now: a detector that cannot be built (missing weights) leaves no settings behind
        out.mkdir(parents=True, exist_ok=True)
        records_path.unlink(missing_ok=True)
        _append_line(records_path, {"settings": settings})
    for photo, rel in todo:
        name = rel.as_posix()
        record: dict[str, Any] = {"source": name, "base": bases[rel]}
        try:
            image = read_image(photo)  # (H, W, 3) float32 in [0, 1]
        except (ValueError, OSError) as e:
            st = photo.stat()
            report.failed[name] = str(e)
            warnings.warn(f"skipping unreadable photo: {e}", stacklevel=2)
            _append_line(records_path, record | {"status": "failed", "outputs": [], "error": str(e),
                                                 "stat": [st.st_size, st.st_mtime_ns]})
            report.new += 1
            if progress is not None:
                progress(f"{name}: unreadable")
            continue
        faces = extract_faces(image, det, lm, size=size, template=template, rule=rule)
        outputs = []
        for i, face in enumerate(faces):
            crop_name = f"{bases[rel]}_{i}.png" if rule == "all" else f"{bases[rel]}.png"
            crop_path = write_image(out / crop_name, face.crop, overwrite=True)  # only leftovers of this photo
            meta = {"scheme": face.scheme, "landmarks": face.crop_landmarks, "points5": face.points5,
                    "size": [size, size], "source": name, "box": face.detection.box, "matrix": face.matrix,
                    "score": float(face.detection.score), "template": template}
            sidecar = write_sidecar(crop_path, {k: v for k, v in meta.items() if v is not None})  # no None keys
            outputs += [crop_name, sidecar.relative_to(out).as_posix()]
        _append_line(records_path, record | {"status": "ok" if faces else "no_face", "faces": len(faces),
                                             "outputs": outputs})
        report.new += 1
        report.faces += len(faces)
        if not faces:
            report.no_face.append(name)
        if progress is not None:
            progress(f"{name}: {len(faces)} face{'s' * (len(faces) != 1)}")
    report.seconds = time.time() - t0
    return report


# ------------------------------------------------------------------------------------------------------- make-testset


def _load_square(path: Path, size: int) -> np.ndarray:
    """An aligned HQ face -> (size, size, 3) float32 in [0, 1], quantised to 8 bit (what hq/ stores)."""
    import cv2

    image = read_image(path)  # (H, W, 3)
    h, w = image.shape[:2]
    if h != w:
        raise ValueError(f"{path}: make-testset needs square aligned faces, got {w}x{h} (run `align` first)")
    if h != size:
        interp = cv2.INTER_AREA if h > size else cv2.INTER_CUBIC
        image = np.clip(cv2.resize(image, (size, size), interpolation=interp), 0.0, 1.0)
    return (np.round(image * 255.0) / 255.0).astype(np.float32)


def _number(value: Any) -> Any:
    """A plain JSON number (non-finite floats become None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _testset_state(out: Path, settings: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], bool]:
    """Finished entries (by output path) of an earlier run with the same settings, and whether it was complete."""
    manifest, progress = out / TESTSET_MANIFEST, out / TESTSET_PROGRESS
    entries: dict[str, dict[str, Any]] = {}
    if manifest.is_file():
        try:
            saved = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{manifest} is not valid JSON ({e})") from e
        _check_settings(saved, settings, out)
        entries.update({e["path"]: e for e in saved.get("images", [])})
    if progress.is_file():
        lines = _read_lines(progress)
        if not lines or "settings" not in lines[0]:
            raise ValueError(f"{progress} has no settings line; it is not a make-testset progress file")
        _check_settings(lines[0]["settings"], settings, out)
        entries.update({e["path"]: e for e in lines[1:] if "path" in e})
    elif not manifest.is_file() and not _is_empty(out):
        raise ValueError(f"output folder {out} is not empty and holds no {TESTSET_MANIFEST}; use an empty or new folder")
    return entries, manifest.is_file() and not progress.is_file()


def make_testset(
    hq: str | os.PathLike,
    output: str | os.PathLike,
    preset: str = "daefr",
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    size: int = 512,
    batch_size: int = 8,
    device: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Degrade every HQ face under `hq` (recursive, sorted) into fixed (HQ, LQ) pairs under `output`; returns it.

    Image i gets seed `sample_seed(seed, i)`, so the LQ files are reproducible byte for byte (on one device) and
    independent of `batch_size`. `overrides` are `Degradation` keyword arguments on top of the preset.
    """
    import torch

    import honestface
    from honestface.data.degradation import Degradation, rgb_to_gray, sample_seed

    hq_root, out = Path(hq), Path(output)
    if not hq_root.is_dir():
        raise FileNotFoundError(f"HQ folder not found: {hq_root}")
    _check_separate(hq_root, out, "the HQ folder")
    if size < 16 or batch_size < 1:
        raise ValueError(f"size must be >= 16 and batch_size >= 1, got size={size}, batch_size={batch_size}")
    files = list_images(hq_root, recursive=True)
    if not files:
        raise ValueError(f"no images found in {hq_root}")
    rels = [f.relative_to(hq_root).as_posix() for f in files]
    paths = [Path(r).with_suffix(".png").as_posix() for r in rels]
    twins = [p for p, n in Counter(p.casefold() for p in paths).items() if n > 1]
    if twins:
        raise ValueError(f"several HQ files map to the output {twins[0]!r} (same name, other extension)")
    overrides = dict(overrides or {})
    settings = _normalise({"preset": preset, "overrides": overrides, "seed": int(seed), "size": int(size),
                           "version": honestface.__version__,
                           "files_sha1": hashlib.sha1("\n".join(rels).encode()).hexdigest()})
    entries, complete = _testset_state(out, settings)
    todo = [i for i, p in enumerate(paths)
            if p not in entries or not ((out / "hq" / p).is_file() and (out / "lq" / p).is_file())]
    if not todo and complete:
        return out
    degrade = Degradation(preset, **overrides)
    progress_path = out / TESTSET_PROGRESS
    if not progress_path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        _append_line(progress_path, {"settings": settings})
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        hqs = [_load_square(files[i], size) for i in chunk]  # each (S, S, 3)
        x = torch.from_numpy(np.stack(hqs)).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S) in [0, 1]
        if device is not None:
            x = x.to(device)
        seeds = [sample_seed(seed, i) for i in chunk]
        with torch.no_grad():
            result = degrade(x, seeds=seeds)
        lq = result.lq.clamp(0, 1).cpu()  # (B, 3, h, w)
        params = {k: torch.as_tensor(v).detach().cpu().reshape(-1).tolist() for k, v in result.params.items()}
        gray = params.get("gray", [False] * len(chunk))
        for j, i in enumerate(chunk):
            hq_j = rgb_to_gray(x[j:j + 1].cpu())[0] if gray[j] else hqs[j]  # gray LQ -> gray target, as in training
            write_image(out / "hq" / paths[i], hq_j, overwrite=True)  # ours: leftovers of an interrupted run
            write_image(out / "lq" / paths[i], lq[j], overwrite=True)
            entry = {"path": paths[i], "source": rels[i], "index": i, "seed": int(seeds[j]),
                     "params": {k: _number(v[j]) for k, v in params.items()}}
            _append_line(progress_path, entry)
            entries[paths[i]] = entry
        if progress is not None:
            progress(f"{min(start + batch_size, len(todo))}/{len(todo)} pairs")
    images = sorted((entries[p] for p in paths), key=lambda e: e["index"])
    manifest = settings | {"count": len(images), "images": images}
    atomic_write_text(out / TESTSET_MANIFEST, json.dumps(manifest, indent=1))
    progress_path.unlink()
    return out


# --------------------------------------------------------------------------------------------------- split-identities


def split_identity_folders(
    root: str | os.PathLike,
    output_dir: str | os.PathLike,
    test_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[list[str], list[str]]:
    """Identity folders under `root` (sub-folders holding at least one image) -> `output_dir/train.txt` and
    `test.txt`, one identity per line, no identity in both. Returns (train, test).

    Existing files with the same content are left untouched; different content needs `overwrite=True`.
    """
    from honestface.data.references import list_identities, read_split_file, split_identities, write_split_file

    root, out = Path(root), Path(output_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"identity root folder not found: {root}")
    identities = [name for name in list_identities(root) if list_images(root / name, recursive=True)]
    if len(identities) < 2:
        raise ValueError(f"{root} has {len(identities)} identity folder(s) with images; a split needs at least 2")
    train, test = split_identities(identities, test_fraction=test_fraction, seed=seed)
    log.debug(f"{root}: {len(identities)} identity folders with images; {len(test)} to test (seed {seed})")
    targets = {out / "train.txt": train, out / "test.txt": test}
    changed = {t: ids for t, ids in targets.items() if not (t.is_file() and read_split_file(t) == ids)}
    clash = [t for t in changed if t.exists()]
    if clash and not overwrite:  # checked before writing, so a refusal leaves both files as they were
        raise FileExistsError(f"refusing to overwrite {clash[0]} (a different split); pass overwrite=True")
    for target, ids in changed.items():  # an unchanged file (and its mtime) is left alone
        comment = f"{target.stem} identities of {root.name}: seed {seed}, test fraction {test_fraction}"
        write_split_file(target, ids, comment=comment, overwrite=True)
        log.info(f"wrote {target} ({len(ids)} identities)")
    return train, test
