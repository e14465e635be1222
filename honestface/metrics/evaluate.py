"""Evaluation runner: pair restored folders with ground truth, compute every metric, summarise.

One or more restored folders ("methods") are paired with a ground-truth folder by relative path without extension
(`a/b.png` matches `a/b.jpg`); optional LQ inputs pair the same way and optional references are looked up per image
by the rule inference uses (`honestface.data.reference_rule`: a mapping file, `refs/<relative stem>/`, the identity
layout `refs/<parent folder>/` without the image itself, or one shared folder). The metric names and
what each computes are in `honestface.metrics.suite` (docs/metrics.md). Per image we compute the IQA metrics in
batches (`honestface.metrics.iqa.IQAMetrics`), our landmark (`lmd_<landmarker>`, ALD) and identity
(`ids_<network>`, `idangle_<network>`) metrics and, with references, the reference honesty of HonestFace. The
published protocol metrics (`deg`, `lmd`, `idd`, `ids_refldm`, `psnr_vqfr`, `ssim_vqfr`) read the files themselves,
as their scripts do, and also report the script's own aggregate (e.g. Deg. drops pairs under 1 degree). A face that
is not found is a *failure* of that metric for that image: counted and reported, never averaged in as a number. FID
is one number per method and reference. For the other metrics, restored / LQ images of another size than their GT
are resized to it (bicubic). `protocol=` computes one paper's table (`honestface.metrics.protocols`).

Our choices (the papers give none): `ald` asks for ALD, ALD-e and ALD-m together, `ref_ids` for the three reference
columns; the default metric set is everything whose weights and backends are available here (the others are listed
as skipped with the reason); GT landmarks are detected once per image and shared by all methods. Files are paired by
relative name; the published scripts pair by sorted file name, which gives the same pairs when both folders hold
the same names (the only case we accept).
Reports (CSV, JSON, markdown, HTML) are written by `honestface.metrics.report`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from honestface.data.reference_rule import resolve_references
from honestface.log import get_logger
from honestface.metrics.pairing import PairingError, index_images, pair_folder, parse_methods
from honestface.metrics.suite import ALD_KEYS, REFERENCE_KEYS, MetricSuite, build_metrics, higher_is_better

__all__ = ["EvaluationResult", "PairingError", "evaluate_folders", "higher_is_better"]

log = get_logger(__name__)


# ------------------------------------------------------------------------------------------------- evaluation
def _uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)  # (H, W, 3)


def _read(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Image file -> uint8 RGB (H, W, 3), resized (bicubic) to `size` = (H, W) if it differs."""
    from PIL import Image

    from honestface.io import read_image

    img = _uint8(read_image(path))
    if size is not None and img.shape[:2] != tuple(size):
        img = np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BICUBIC))
    return img


@dataclass
class EvaluationResult:
    """Per-image rows per method and the run's metadata. `rows[method]` is one dict per image with keys
    image, restored, gt, lq, refs, every metric column (NaN where it failed) and failures {column: reason}."""

    methods: dict[str, Path]
    gt: Path | None  # None: a video evaluation without ground truth (face_warp_error only)
    lq: Path | None
    refs: Path | None
    columns: list[str]
    rows: dict[str, list[dict[str, Any]]]
    dataset_metrics: dict[str, dict[str, float]]  # method -> {set column key (e.g. "fid", "fid_basicsr@gt"): value}
    skipped: dict[str, str]
    backends: dict[str, str]
    implementations: dict[str, dict[str, Any]]  # metric -> {"implementation", "weights": {entry: {path, sha256}}}
    landmarks: dict[str, dict[str, tuple[np.ndarray | None, np.ndarray | None]]]  # method -> image -> (gt, restored)
    aggregates: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # method -> published metric ->
    # the script's own aggregate {"value", ...} (e.g. Deg. without pairs under 1 degree)
    set_references: dict[str, dict[str, Any]] = field(default_factory=dict)  # set key -> metric, reference, sha256
    protocol: str | None = None
    test_set: str | None = None
    crop_border: int = 0
    warnings: list[str] = field(default_factory=list)
    # a video evaluation (honestface.apps.evaluate_video): face_warp_error of every method and of the input
    # ({"metric", "scale", "guide", "flow", "detector", ..., "rows": {label: TemporalResult.as_dict()}}), and the
    # video behind each frame folder ({"gt" | "lq" | method: path})
    temporal: dict[str, Any] = field(default_factory=dict)
    videos: dict[str, str] = field(default_factory=dict)

    def higher_is_better(self) -> dict[str, bool]:
        temporal = [self.temporal["metric"]] if self.temporal else []
        return {c: higher_is_better(c) for c in [*self.columns, *self._dataset_columns(), *temporal]}

    def _dataset_columns(self) -> list[str]:
        return list(dict.fromkeys(k for d in self.dataset_metrics.values() for k in d))

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per method and metric mean, median, std, count, failures (with reasons), the published
        aggregate where a protocol metric has one, rankings, the protocol and every implementation."""
        from honestface.metrics.report import summarise

        return summarise(self)


def _resolve_reference(reference: str | None, gt_dir: Path, fid_ref: Any, weights: dict[str, str]) -> Path:
    """A FID column's reference: None -> `fid_ref` or the GT folder; "gt" -> the GT folder; else a folder, a
    statistics file or a registry entry name (resolved through the weights registry)."""
    from honestface.metrics.protocols import GT
    from honestface.weights import resolve_weight

    if reference is None:
        return Path(fid_ref) if fid_ref is not None else gt_dir
    if reference == GT:
        return gt_dir
    if Path(reference).exists():
        return Path(reference)
    return resolve_weight(reference, weights.get(reference))


def evaluate_folders(restored: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
                     gt: str | os.PathLike, refs: str | os.PathLike | None = None, lq: str | os.PathLike | None = None,
                     metrics: Sequence[str] | None = None, device: str = "cpu", batch_size: int = 8,
                     fid_ref: str | os.PathLike | None = None, weights: dict[str, str] | None = None,
                     landmarks: str = "dlib68", detector: str = "dlib", identity: str = "auto",
                     verbose: bool = False, protocol: str | None = None, test_set: str | None = None,
                     crop_border: int | None = None) -> EvaluationResult:
    """Evaluate restored folder(s) (paths or `name=path`) against `gt`; see the module docstring.

    protocol: a published table (`honestface.metrics.protocols.PROTOCOLS`): its columns are computed (plus any
    `metrics` given) with its settings. test_set: the label of the test set (recorded; a protocol warns without).
    """

    from honestface.metrics.protocols import get_protocol

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    proto = get_protocol(protocol) if protocol is not None else None
    methods = parse_methods(restored)
    gt_dir = Path(gt)
    gt_index = index_images(gt_dir)
    if not gt_index:
        raise FileNotFoundError(f"no images in the ground-truth folder {gt_dir}")
    indices, errors = {}, []
    for name, folder in methods.items():
        indices[name], err = pair_folder(folder, gt_index, f"restored ({name})", gt_dir)
        errors += [err] if err else []
    lq_index = None
    if lq is not None:
        lq_index, err = pair_folder(Path(lq), gt_index, "LQ", gt_dir)
        errors += [err] if err else []
    if errors:
        raise PairingError(" | ".join(errors))
    refs_dir = Path(refs) if refs is not None else None
    if refs_dir is not None and not refs_dir.exists():
        raise FileNotFoundError(f"references not found: {refs_dir}")
    notes: list[str] = []
    set_cols: list[tuple[str, str, str | None]] = []
    if proto is not None:
        metrics = [*proto.image_metrics, *(metrics or [])]
        set_cols = [(c.key, c.metric, c.reference) for c in proto.set_columns]
        crop_border = proto.crop_border if crop_border is None else crop_border
        if test_set is None:
            notes.append(f"no test-set label given (--test-set): {proto.title} reports numbers on "
                         f"{', '.join(proto.test_sets)}, and the same metric differs widely between test sets")
    weights = dict(weights or {})
    suite = build_metrics(metrics, refs_dir is not None, lq is not None, device, batch_size, weights, landmarks,
                          detector, identity, set_columns=set_cols, crop_border=int(crop_border or 0))
    keys = sorted(gt_index)
    gt_files = [gt_index[k] for k in keys]  # references by the rule inference uses (honestface.data.reference_rule)
    refs_of = dict(zip(keys, resolve_references(gt_files, [f.relative_to(gt_dir).as_posix() for f in gt_files],
                                                refs_dir).lists))
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    overlay: dict[str, dict[str, Any]] = {m: {} for m in methods}
    id_cols = [c for c in suite.columns if c.startswith(("ids_", "idangle_")) and c not in suite.published]
    lm_cols = [c for c in suite.columns if (c.startswith("lmd_") or c in ALD_KEYS)]
    reuse = suite.identity.reuse() if suite.identity is not None else contextlib.nullcontext()
    with reuse:  # an image embedded once (a person's references, the LQ of every method) is not embedded again
        _evaluate_chunks(suite, keys, batch_size, methods, indices, gt_index, lq_index, refs_of, rows, overlay,
                         id_cols, lm_cols, device, verbose)
    aggregates = _published(suite, methods, indices, gt_index, keys, rows, verbose)
    dataset: dict[str, dict[str, float]] = {m: {} for m in methods}
    set_refs: dict[str, dict[str, Any]] = {}
    for key, metric, reference in suite.set_columns:
        ref, why = _try_ref(reference, gt_dir, fid_ref, weights)
        if ref is None:
            suite.skipped[key] = why
            continue
        set_refs[key] = _reference_record(metric, reference, ref)
        for m, folder in methods.items():
            dataset[m][key] = float(suite.iqa.fid(folder, ref, name=metric))
    if any(metric in ("fid", "fid_basicsr") for _, metric, _ in suite.set_columns):
        suite.backends["fid_ref"] = str(_resolve_reference(None, gt_dir, fid_ref, weights))
    for n in notes:
        log.warning(n)
    return EvaluationResult(methods=methods, gt=gt_dir, lq=Path(lq) if lq is not None else None, refs=refs_dir,
                            columns=suite.columns, rows=rows, dataset_metrics=dataset, skipped=suite.skipped,
                            backends=suite.backends, implementations=suite.implementations, landmarks=overlay,
                            aggregates=aggregates, set_references=set_refs, protocol=protocol, test_set=test_set,
                            crop_border=int(crop_border or 0), warnings=notes)


def _rename(res: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(k, k): v for k, v in res.items()}


def _try_ref(reference: str | None, gt_dir: Path, fid_ref: Any, weights: dict[str, str]):
    try:
        return _resolve_reference(reference, gt_dir, fid_ref, weights), None
    except Exception as e:  # noqa: BLE001  (a missing statistics file: that column is skipped with the reason)
        return None, f"{type(e).__name__}: {' '.join(str(e).split())}"


def _reference_record(metric: str, reference: str | None, path: Path) -> dict[str, Any]:
    """What a FID number was computed against: the metric, the reference as asked, its path and file hash."""
    from honestface.weights import file_sha256

    return {"metric": metric, "reference": reference or "fid_ref", "path": str(path),
            "sha256": file_sha256(path) if path.is_file() else None}


def _published(suite: MetricSuite, methods: dict[str, Path], indices: dict[str, dict[str, Path]],
               gt_index: dict[str, Path], keys: list[str], rows: dict[str, list[dict[str, Any]]],
               verbose: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """Run the published per-file metrics (each reads the files as its script does) and fill their columns."""
    out: dict[str, dict[str, dict[str, Any]]] = {m: {} for m in methods}
    done: set[int] = set()
    for name, obj in suite.published.items():
        if id(obj) in done:
            continue
        done.add(id(obj))
        for m in methods:
            restored, gts = [indices[m][k] for k in keys], [gt_index[k] for k in keys]
            values = obj.pair_values(restored, gts)
            values = values if isinstance(values, dict) else {name: values}
            for metric, vals in values.items():
                if metric not in suite.published:
                    continue
                for row, v in zip(rows[m], np.asarray(vals, dtype=np.float64)):
                    if math.isfinite(v):
                        row[metric] = float(v)
                    else:
                        row["failures"][metric] = f"no value ({v}) from {metric}'s published script steps"
                out[m][metric] = obj.aggregate(np.asarray(vals, dtype=np.float64), len(keys))
            if verbose:
                log.info(f"{', '.join(values)}: {m} done")
    return out



def _evaluate_chunks(suite: Any, keys: list[str], batch_size: int, methods: Sequence[str], indices: dict,
                     gt_index: dict, lq_index: dict | None, refs_of: dict, rows: dict, overlay: dict,
                     id_cols: list[str], lm_cols: list[str], device: Any, verbose: bool) -> None:
    """The per-image metrics of every method, `batch_size` images at a time, appended to `rows` / `overlay`."""
    import torch

    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        gts = [_read(gt_index[k]) for k in chunk]
        lqs = [_read(lq_index[k], g.shape[:2]) for k, g in zip(chunk, gts)] if lq_index else [None] * len(chunk)
        ref_paths = [refs_of[k] for k in chunk]
        refs_img = [[_read(p) for p in ps] for ps in ref_paths] if "ref_ids" in suite.columns else None
        gt_ids = [_gt_identity(suite.identity, g) for g in gts] if id_cols else None
        gt_lms = [_gt_landmarks(suite.landmark, g) for g in gts] if lm_cols else None
        for m in methods:
            outs = [_read(indices[m][k], g.shape[:2]) for k, g in zip(chunk, gts)]
            batch = [{"image": k, "restored": indices[m][k], "gt": gt_index[k],
                      "lq": lq_index[k] if lq_index else None, "refs": ref_paths[i],
                      "failures": {}, **dict.fromkeys(suite.columns, float("nan"))} for i, k in enumerate(chunk)]
            if suite.iqa_names:
                _iqa(suite, outs, gts, batch, device, torch)
            for i, (out, g) in enumerate(zip(outs, gts)):
                row = batch[i]
                if gt_lms is not None:
                    lm_out, res = _restored_landmarks(suite.landmark, out, gt_lms[i])
                    overlay[m][row["image"]] = (gt_lms[i][1], lm_out)
                    _store(row, lm_cols, _rename(res, {"lmd": next((c for c in lm_cols if c.startswith("lmd_")),
                                                                   "")}))
                if gt_ids is not None:
                    res = _identity_values(suite.identity, out, g, gt_ids[i])
                    names = {"ids": f"ids_{suite.identity.name}", "deg": f"idangle_{suite.identity.name}"}
                    _store(row, id_cols, _rename(res, names))
                if refs_img is not None:
                    res: dict[str, Any] = {"failed": "no references"}
                    if refs_img[i]:  # without an LQ folder only ref_ids is asked for (lq_ref_ids needs the LQ)
                        aligned = gt_ids[i][0] if gt_ids is not None and suite.identity.same_face else None
                        res = suite.identity.reference_honesty(out, out if lqs[i] is None else lqs[i], refs_img[i],
                                                               face=aligned)
                        res = {"ref_ids": res.get("out_ref_ids"), "lq_ref_ids": res.get("in_ref_ids"),
                               "ref_gain": res.get("gain"), **({"failed": res["failed"]} if "failed" in res else {})}
                    _store(row, [c for c in REFERENCE_KEYS if c in suite.columns], res)
            rows[m] += batch
        if verbose:
            log.info(f"evaluated {min(start + batch_size, len(keys))}/{len(keys)} images")

def _store(row: dict[str, Any], cols: list[str], res: dict[str, Any]) -> None:
    """Copy a metric result into the row; a {"failed": reason} (or a missing / None value) is a failure."""
    for c in cols:
        v = res.get(c)
        if "failed" in res or v is None or not math.isfinite(float(v)):
            row["failures"][c] = str(res.get("failed") or "no value")
        else:
            row[c] = float(v)


def _gt_identity(im: Any, gt: np.ndarray) -> tuple[Any, np.ndarray | None, str | None]:
    """(detection, embedding, failure) of one GT image, computed once and shared by every method."""
    face = im.detect(gt)
    if face is None:
        return None, None, f"gt: no face detected by {im.detector.name}"
    return face, im.embed(gt, face), None


def _identity_values(im: Any, out: np.ndarray, gt: np.ndarray, gt_id: tuple) -> dict[str, Any]:
    """IDS / Deg. of a restored image against the cached GT embedding (GT detection reused for aligned pairs)."""
    from honestface.face.identity import cosine_similarity, identity_angle_degrees

    face, e_gt, failure = gt_id
    if failure is not None:
        return {"failed": failure}
    if not im.same_face:
        return im(out, gt)
    e_out = im.embed(out, face)
    return {"ids": float(cosine_similarity(e_out, e_gt)), "deg": float(identity_angle_degrees(e_out, e_gt))}


def _gt_landmarks(lm: Any, gt: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(box, landmarks, failure) of one GT image, detected once and shared by every method."""
    box = lm.face_box(gt)
    if box is None:
        return None, None, f"gt: {lm.last_failure}"
    return box, lm.predict(gt, box), None


def _restored_landmarks(lm: Any, out: np.ndarray, gt_box: tuple) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Landmarks of a restored image (in the GT's box for aligned faces, `lm.same_box`) and LMD / ALD."""
    from honestface.metrics.landmark import landmark_scores

    box, g, failure = gt_box
    if failure is not None:
        return None, {"failed": failure}
    r = lm.predict(out, box) if lm.same_box else lm.landmarks(out)
    if r is None:
        return None, {"failed": f"restored: {lm.last_failure}"}
    return r, landmark_scores(r, g, lm.scheme)


def _iqa(suite: MetricSuite, outs: list[np.ndarray], gts: list[np.ndarray], rows: list[dict[str, Any]],
         device: str, torch: Any) -> None:
    """Batched IQA of one chunk; images of different sizes go in separate batches."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, g in enumerate(gts):
        groups.setdefault(g.shape, []).append(i)
    for idx in groups.values():
        def to_t(imgs: list[np.ndarray], idx: list[int] = idx) -> Any:
            x = torch.from_numpy(np.stack([imgs[i] for i in idx])).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
            return x.to(device=device, dtype=torch.float32) / 255.0  # [0, 1]

        scores = suite.iqa(to_t(outs), to_t(gts))
        for name in suite.iqa_names:
            vals = scores[name].detach().float().cpu().reshape(-1).tolist()
            for j, i in enumerate(idx):
                if math.isfinite(vals[j]):
                    rows[i][name] = float(vals[j])
                else:  # e.g. PSNR of identical images
                    rows[i]["failures"][name] = f"non-finite value ({vals[j]})"


# ------------------------------------------------------------------------------------------------- command line
