"""Evaluation runner (issue 8): pair restored folders with ground truth, compute every metric, summarise.

One or more restored folders ("methods") are paired with a ground-truth folder by relative path without extension
(`a/b.png` matches `a/b.jpg`); optional LQ inputs pair the same way and optional references are looked up per image
(`refs/<relative stem>/` or, identity layout, the other images of `refs/<parent folder>/`). Per image we compute the
full-reference IQA metrics in batches (`honestface.metrics.iqa.IQAMetrics`), LMD / ALD (landmark.py), IDS / Deg.
(identity.py) and, with references, the reference honesty of HonestFace (identity of the output vs the references,
against the LQ's). A face that is not found is a *failure* of that metric for that image: it is counted and reported,
never averaged in as a number. FID is one number per method (restored folder vs `fid_ref`, default the GT folder).
Restored / LQ images of another size than their GT are resized to it (bicubic) before any metric.

Our choices (the papers give none): `ald` asks for ALD, ALD-e and ALD-m together, `ref_ids` for the three reference
columns; the default metric set is everything whose weights and backends are available here (the others are listed
as skipped with the reason); GT landmarks are detected once per image and shared by all methods.
Reports (CSV, JSON, markdown, HTML) are written by `honestface.metrics.report`.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LANDMARK_KEYS = ("lmd", "ald", "ald_e", "ald_m")
IDENTITY_KEYS = ("ids", "deg")
REFERENCE_KEYS = ("ref_ids", "lq_ref_ids", "ref_gain")
GROUPS = {"ald": ("ald", "ald_e", "ald_m"), "ref_ids": REFERENCE_KEYS}  # one requested name -> its columns
ALIASES = {"lpips": "lpips_vgg", "ald-e": "ald_e", "ald-m": "ald_m", "ids-ref": "ref_ids"}
LOWER_IS_BETTER = {"deg", "lmd", "ald", "ald_e", "ald_m"}  # of the face metrics; IQA metrics carry their own


class PairingError(ValueError):
    """Restored / LQ folders do not hold the same images as the ground truth (one line: missing and extra names)."""


def higher_is_better(name: str) -> bool:
    """Direction of a metric: the IQA registry's flag for IQA metrics, else our table (distances: lower)."""
    from honestface.metrics.iqa import IQA_METRICS

    return IQA_METRICS[name].higher_is_better if name in IQA_METRICS else name not in LOWER_IS_BETTER


# ------------------------------------------------------------------------------------------------- pairing
def index_images(folder: Path) -> dict[str, Path]:
    """{relative path without extension (posix): file} of every image under `folder`."""
    from honestface.io import list_images

    out: dict[str, Path] = {}
    for p in list_images(folder):
        key = p.relative_to(folder).with_suffix("").as_posix()
        if key in out:
            raise PairingError(f"two images with the same name in {folder}: {out[key].name} and {p.name}")
        out[key] = p
    return out


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:10])
    return shown + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")


def pair_folder(folder: Path, gt: dict[str, Path], what: str, gt_dir: Path) -> tuple[dict[str, Path], str | None]:
    """Index `folder` and compare it with the GT index: (index, None) or (index, one-line mismatch description)."""
    found = index_images(folder)
    missing = sorted(set(gt) - set(found))
    extra = sorted(set(found) - set(gt))
    if not missing and not extra:
        return found, None
    parts = [f"{len(missing)} missing ({_names(missing)})"] if missing else []
    parts += [f"{len(extra)} extra ({_names(extra)})"] if extra else []
    return found, f"{what} folder {folder} does not match the ground truth {gt_dir}: " + "; ".join(parts)


def find_references(refs: Path, key: str, exclude: Path | None = None) -> list[Path]:
    """References of image `key`: refs/<key>/*, else the images of refs/<parent of key>/ (identity layout) except
    the file `exclude` itself (the GT, when refs and ground truth are the same folder)."""
    from honestface.io import list_images

    own = refs / key
    if own.is_dir():
        return list_images(own)
    parent = Path(key).parent
    if str(parent) == "." or not (refs / parent).is_dir():
        return []
    skip = exclude.resolve() if exclude is not None else None
    return [p for p in list_images(refs / parent, recursive=False) if p.resolve() != skip]


def parse_methods(restored: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike]
                  ) -> dict[str, Path]:
    """Folders (or `name=folder` items, or a {name: folder} mapping) -> {method name: folder}; the name defaults to
    the folder's name."""
    if isinstance(restored, Mapping):
        restored = [f"{name}={folder}" for name, folder in restored.items()]
    items = [restored] if isinstance(restored, (str, os.PathLike)) else list(restored)
    if not items:
        raise ValueError("no restored folder given (--restored DIR [DIR ...] or eval.restored=...)")
    methods: dict[str, Path] = {}
    for item in items:
        text = str(item)
        name, _, path = text.partition("=") if "=" in text and not Path(text).exists() else ("", "", text)
        folder = Path(path)
        name = name or folder.resolve().name
        if not folder.is_dir():
            raise FileNotFoundError(f"restored folder not found: {folder}")
        if name in methods:
            raise ValueError(f"two restored folders are both named {name!r}: give them names as name=path")
        methods[name] = folder
    return methods


# ------------------------------------------------------------------------------------------------- metrics
@dataclass
class MetricSuite:
    """The metric objects of one run: which columns, which are skipped and why, and the backends' names."""

    columns: list[str]
    skipped: dict[str, str]
    iqa: Any = None
    iqa_names: list[str] = field(default_factory=list)
    fid: bool = False
    landmark: Any = None
    identity: Any = None
    backends: dict[str, str] = field(default_factory=dict)
    implementations: dict[str, str] = field(default_factory=dict)


def _try(build):
    try:
        return build(), None
    except Exception as e:  # noqa: BLE001  (a missing backend or weight file: reported, the run goes on)
        return None, f"{type(e).__name__}: {' '.join(str(e).split())}"


def _expand(requested: Sequence[str], known: list[str]) -> list[str]:
    """Requested names -> column names (aliases and groups expanded, order kept); unknown names raise."""
    out: list[str] = []
    for raw in requested:
        n = ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if not n:
            continue
        if n not in known and n not in GROUPS:
            raise ValueError(f"unknown metric {n!r}; known: {', '.join([*known, *ALIASES])}")
        out += GROUPS.get(n, (n,))
    return list(dict.fromkeys(out))


def _build_iqa(names: list[str], device: str, weights: dict[str, str], batch_size: int, skipped: dict[str, str]):
    """One IQAMetrics for all `names`; if that fails, find the metrics that do not build and skip them."""
    from honestface.metrics.iqa import IQAMetrics

    iqa, reason = _try(lambda: IQAMetrics(names, device=device, weights=weights, batch_size=batch_size))
    if reason is None:
        return iqa, names
    good = []
    for n in names:
        _, why = _try(lambda n=n: IQAMetrics([n], device=device, weights=weights, batch_size=batch_size))
        if why is None:
            good.append(n)
        else:
            skipped[n] = why
    iqa, reason = _try(lambda: IQAMetrics(good, device=device, weights=weights, batch_size=batch_size))
    if reason is not None:
        skipped.update(dict.fromkeys(good, reason))
        return None, []
    return iqa, good


def build_metrics(requested: Sequence[str] | None, refs: bool, lq: bool, device: str, batch_size: int,
                  weights: dict[str, str] | None = None, landmarks: str = "dlib68", detector: str = "dlib",
                  identity: str = "auto") -> MetricSuite:
    """Choose and build the metrics. `requested=None`: all available. Unknown names raise ValueError; known but
    unavailable ones (no weights, no backend, no references) are skipped with the reason."""
    from honestface.metrics.iqa import IQA_METRICS, available_metrics
    from honestface.weights import resolve_weight

    weights = dict(weights or {})
    iqa_avail = available_metrics(weights)
    names = _expand(requested, [*IQA_METRICS, *LANDMARK_KEYS, *IDENTITY_KEYS, *REFERENCE_KEYS]) \
        if requested is not None else None
    want = lambda n: names is None or n in names
    skipped = {n: str(why) for n, why in iqa_avail.items() if why is not None and want(n)}
    suite = MetricSuite(columns=[], skipped=skipped)
    iqa_names = [n for n in IQA_METRICS if want(n) and IQA_METRICS[n].mode != "set" and n not in skipped]
    suite.fid = want("fid") and "fid" not in skipped
    if iqa_names or suite.fid:
        suite.iqa, suite.iqa_names = _build_iqa(iqa_names, device, weights, batch_size, skipped)
        if suite.iqa is None and suite.fid:
            skipped["fid"], suite.fid = "the IQA metrics could not be built", False
    for n in suite.iqa_names + (["fid"] if suite.fid else []):
        files = [str(resolve_weight(k, weights.get(k))) for k in IQA_METRICS[n].weights]
        suite.implementations[n] = f"honestface.metrics.iqa: {IQA_METRICS[n].description}" + \
            (f"; weights {', '.join(files)}" if files else "")
    suite.columns += suite.iqa_names
    lm_cols = [c for c in LANDMARK_KEYS if want(c)]
    if lm_cols:
        from honestface.metrics.landmark import LandmarkMetrics

        suite.landmark, reason = _try(lambda: LandmarkMetrics(landmarker=landmarks, detector=detector, device=device))
        if reason:
            skipped.update(dict.fromkeys(lm_cols, reason))
        else:
            suite.columns += lm_cols
            suite.backends["landmarks"] = suite.landmark.name
            impl = f"honestface.metrics.landmark (ALD: our affine definition), {suite.landmark.name}"
            suite.implementations.update(dict.fromkeys(lm_cols, impl))
    id_cols = [c for c in IDENTITY_KEYS if want(c)]
    ref_cols = [c for c in REFERENCE_KEYS if want(c)]
    if ref_cols and not refs:
        if names is not None:  # asked for explicitly: say why nothing comes
            skipped.update(dict.fromkeys(ref_cols, "needs a references folder (--refs)"))
        ref_cols = []
    if ref_cols and not lq:
        skipped.update({c: "needs the LQ inputs (--lq)" for c in ref_cols if c != "ref_ids"})
        ref_cols = [c for c in ref_cols if c == "ref_ids"]
    if id_cols or ref_cols:
        from honestface.metrics.identity import IdentityMetrics

        suite.identity, reason = _try(lambda: IdentityMetrics(backend=identity, device=device, detector=detector))
        if reason:
            skipped.update(dict.fromkeys(id_cols + ref_cols, reason))
        else:
            suite.columns += id_cols + ref_cols
            suite.backends["identity"] = suite.identity.name
            impl = f"honestface.metrics.identity, backend {suite.identity.name}, detector {detector}"
            suite.implementations.update(dict.fromkeys(id_cols + ref_cols, impl))
    return suite


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
    gt: Path
    lq: Path | None
    refs: Path | None
    columns: list[str]
    rows: dict[str, list[dict[str, Any]]]
    dataset_metrics: dict[str, dict[str, float]]  # method -> {"fid": value}
    skipped: dict[str, str]
    backends: dict[str, str]
    implementations: dict[str, str]  # metric -> implementation and weight files
    landmarks: dict[str, dict[str, tuple[np.ndarray | None, np.ndarray | None]]]  # method -> image -> (gt, restored)

    def higher_is_better(self) -> dict[str, bool]:
        return {c: higher_is_better(c) for c in [*self.columns, *self._dataset_columns()]}

    def _dataset_columns(self) -> list[str]:
        return list(dict.fromkeys(k for d in self.dataset_metrics.values() for k in d))

    def summary(self) -> dict[str, Any]:
        """JSON-ready: per method and metric mean, median, std, count, failures (with reasons), plus rankings."""
        from honestface.metrics.report import summarise

        return summarise(self)


def evaluate_folders(restored: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
                     gt: str | os.PathLike, refs: str | os.PathLike | None = None, lq: str | os.PathLike | None = None,
                     metrics: Sequence[str] | None = None, device: str = "cpu", batch_size: int = 8,
                     fid_ref: str | os.PathLike | None = None, weights: dict[str, str] | None = None,
                     landmarks: str = "dlib68", detector: str = "dlib", identity: str = "auto",
                     verbose: bool = False) -> EvaluationResult:
    """Evaluate restored folder(s) (paths or `name=path`) against `gt`; see the module docstring."""
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
    if refs_dir is not None and not refs_dir.is_dir():
        raise FileNotFoundError(f"references folder not found: {refs_dir}")
    suite = build_metrics(metrics, refs_dir is not None, lq is not None, device, batch_size, weights, landmarks,
                          detector, identity)
    keys = sorted(gt_index)
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    overlay: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        gts = [_read(gt_index[k]) for k in chunk]
        lqs = [_read(lq_index[k], g.shape[:2]) for k, g in zip(chunk, gts)] if lq_index else [None] * len(chunk)
        ref_paths = [find_references(refs_dir, k, gt_index[k]) if refs_dir else [] for k in chunk]
        refs_img = [[_read(p) for p in ps] for ps in ref_paths] if "ref_ids" in suite.columns else None
        id_on = suite.identity is not None and any(c in suite.columns for c in IDENTITY_KEYS)
        gt_ids = [_gt_identity(suite.identity, g) for g in gts] if id_on else None
        gt_lms = [_gt_landmarks(suite.landmark, g) for g in gts] if suite.landmark is not None else None
        for m in methods:
            outs = [_read(indices[m][k], g.shape[:2]) for k, g in zip(chunk, gts)]
            batch = [{"image": k, "restored": indices[m][k], "gt": gt_index[k],
                      "lq": lq_index[k] if lq_index else None, "refs": ref_paths[i],
                      "failures": {}, **dict.fromkeys(suite.columns, float("nan"))} for i, k in enumerate(chunk)]
            if suite.iqa_names:
                _iqa(suite, outs, gts, batch, device, torch)
            for i, (out, g) in enumerate(zip(outs, gts)):
                row = batch[i]
                if suite.landmark is not None:
                    lm_out, res = _restored_landmarks(suite.landmark, out, gt_lms[i])
                    overlay[m][row["image"]] = (gt_lms[i][1], lm_out)
                    _store(row, [c for c in LANDMARK_KEYS if c in suite.columns], res)
                if gt_ids is not None:
                    _store(row, [c for c in IDENTITY_KEYS if c in suite.columns],
                           _identity_values(suite.identity, out, g, gt_ids[i]))
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
            print(f"evaluated {min(start + batch_size, len(keys))}/{len(keys)} images", file=sys.stderr)
    dataset: dict[str, dict[str, float]] = {m: {} for m in methods}
    if suite.fid:
        ref = fid_ref if fid_ref is not None else gt_dir
        for m, folder in methods.items():
            dataset[m]["fid"] = float(suite.iqa.fid(folder, ref))
        suite.backends["fid_ref"] = str(ref)
    return EvaluationResult(methods=methods, gt=gt_dir, lq=Path(lq) if lq is not None else None, refs=refs_dir,
                            columns=suite.columns, rows=rows, dataset_metrics=dataset, skipped=suite.skipped,
                            backends=suite.backends, implementations=suite.implementations, landmarks=overlay)


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
def default_output(methods: dict[str, Path], inputs: Sequence[Path]) -> Path:
    """`<parent of the first restored folder>/evaluation`, or beside the inputs' common folder when that would
    land inside an input folder."""
    resolved = [p.resolve() for p in inputs]
    out = next(iter(methods.values())).resolve().parent / "evaluation"
    if any(out == p or p in out.parents for p in resolved):
        out = Path(os.path.commonpath([str(p) for p in resolved])).parent / "evaluation"
    return out


def check_output(output: Path, inputs: Sequence[Path]) -> None:
    """The reports never go into an input folder (they would be paired as images on the next run)."""
    out = output.resolve()
    for p in inputs:
        p = p.resolve()
        if out == p or p in out.parents:
            raise ValueError(f"the output folder {output} must not be inside the input folder {p}")


def run_evaluation(cfg: Any) -> int:
    """Run the `eval.*` section of a config: evaluate, print the table, write the reports. Returns the exit code."""
    from honestface.metrics.report import markdown_table, write_reports

    e = cfg.eval
    try:
        if not e.restored or not e.ground_truth:
            raise ValueError("eval.restored (--restored) and eval.ground_truth (--gt) are required")
        if e.batch_size < 1:
            raise ValueError(f"bad value for 'eval.batch_size': must be > 0, got {e.batch_size}")
        restored = [str(r) for r in e.restored] if not isinstance(e.restored, str) else [e.restored]
        methods = parse_methods(restored)
        inputs = [*methods.values(), Path(e.ground_truth)] + [Path(p) for p in (e.lq, e.references) if p]
        output = Path(e.output) if e.output else default_output(methods, inputs)
        check_output(output, inputs)
        device = e.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        metrics = None if e.metrics is None else [str(m) for m in e.metrics]
        result = evaluate_folders([f"{n}={p}" for n, p in methods.items()], e.ground_truth, refs=e.references,
                                  lq=e.lq, metrics=metrics, device=device, batch_size=e.batch_size,
                                  fid_ref=e.fid_ref, weights=dict(cfg.weights), landmarks=e.landmarks,
                                  detector=e.detector, identity=e.identity, verbose=True)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, reason in result.skipped.items():
        print(f"skipped metric {name}: {reason}")
    print(markdown_table(result))
    for what, path in write_reports(result, output, thumbnail=e.thumbnail, config=cfg).items():
        print(f"{what}: {path}")
    return 0
