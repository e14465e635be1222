"""The metric catalogue of the evaluation runner: every metric name, its direction, and how it is built.

Names mean what they mean in published tables (issue 16):
- image quality (`honestface.metrics.iqa`): `psnr`, `ssim`, `lpips`, `lpips_vgg`, `dists`, `niqe`, `musiq`,
  `maniqa`, `clipiqa`, `fid` are pyiqa's metrics of those names at their default settings; `psnr_y` / `ssim_y`
  BasicSR's Y-channel PSNR / SSIM (`crop_border`); `ssim_rgb` SSIM averaged over R, G, B; `fid_basicsr` the
  BasicSR / VQFR FID;
- published protocols, each computed from the files exactly as its script does: `deg` (VQFR ArcFace angle),
  `lmd` (VQFR AWing landmark distance), `idd` (DAEFR / RestoreFormer++ identity distance), `ids_refldm`
  (ReF-LDM identity similarity), `psnr_vqfr` / `ssim_vqfr` (VQFR's mean/variance-corrected PSNR / SSIM);
- ours, under names that say which network they use: `ids_<backend>` / `idangle_<backend>` (cosine and angle in
  degrees of an identity network: dlib, arcface_onnx, iresnet; faces detected), `lmd_<landmarker>` (landmark
  distance with our detector + landmarker), `ald`, `ald_e`, `ald_m` (our affine landmark distance) and the reference
  honesty columns `ref_ids`, `lq_ref_ids`, `ref_gain`.
Definitions and sources: docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

IDENTITY_BACKENDS = ("arcface_onnx", "iresnet", "dlib")
LANDMARKERS = ("dlib68", "awing98", "insightface106")
ALD_KEYS = ("ald", "ald_e", "ald_m")
REFERENCE_KEYS = ("ref_ids", "lq_ref_ids", "ref_gain")
GROUPS = {"ald": ALD_KEYS, "ref_ids": REFERENCE_KEYS}  # one requested name -> its columns
ALIASES = {"ald-e": "ald_e", "ald-m": "ald_m", "ids-ref": "ref_ids", "lpips-vgg": "lpips_vgg"}
RENAMED = {  # names whose meaning changed in issue 16: say what to ask for instead
    "ids": "ids_dlib / ids_arcface_onnx / ids_iresnet (our identity cosine) or ids_refldm (ReF-LDM's)",
    "lpips_alex": "lpips (pyiqa's LPIPS is the AlexNet one)",
}
# per-file published metrics: name -> (higher is better, module that builds it)
PUBLISHED = {"deg": False, "idd": False, "ids_refldm": True, "lmd": False, "psnr_vqfr": True, "ssim_vqfr": True}


def iqa_metrics() -> dict[str, Any]:
    from honestface.metrics.iqa import IQA_METRICS

    return IQA_METRICS


def known_metrics() -> list[str]:
    """Every name `build_metrics` accepts (groups and per-backend names included)."""
    from honestface.metrics.protocols import NOT_IMPLEMENTED

    # ids_auto / idangle_auto: the first identity network whose weights are here (what the default set uses)
    ours = [f"{p}_{b}" for b in (*IDENTITY_BACKENDS, "auto") for p in ("ids", "idangle")]
    ours += [f"lmd_{lm}" for lm in LANDMARKERS]
    return [*iqa_metrics(), *PUBLISHED, *ours, *ALD_KEYS, *REFERENCE_KEYS, *NOT_IMPLEMENTED]


def higher_is_better(name: str) -> bool:
    """Direction of a metric (or of a `metric@reference` FID column)."""
    base = name.split("@", 1)[0]
    iqa = iqa_metrics()
    if base in iqa:
        return iqa[base].higher_is_better
    if base in PUBLISHED:
        return PUBLISHED[base]
    if base == "qalign":
        return True
    return not (base.startswith(("idangle_", "lmd_", "fid")) or base in ALD_KEYS or base == "face_warp_error")


def expand(requested: Sequence[str]) -> list[str]:
    """Requested names -> column names (aliases and groups expanded, order kept); unknown names raise."""
    known = known_metrics()
    out: list[str] = []
    for raw in requested:
        n = ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if not n:
            continue
        if n in RENAMED:
            raise ValueError(f"metric {n!r} is ambiguous in published tables; ask for {RENAMED[n]}")
        if n not in known and n not in GROUPS:
            raise ValueError(f"unknown metric {n!r}; known: {', '.join([*known, *ALIASES])}")
        out += GROUPS.get(n, (n,))
    return list(dict.fromkeys(out))


@dataclass
class MetricSuite:
    """The metric objects of one run: which columns, which are skipped and why, and how each is implemented."""

    columns: list[str]  # per-image columns, in order
    skipped: dict[str, str]
    set_columns: list[tuple[str, str, str | None]] = field(default_factory=list)  # (key, metric, reference)
    iqa: Any = None
    iqa_names: list[str] = field(default_factory=list)
    landmark: Any = None
    identity: Any = None
    published: dict[str, Any] = field(default_factory=dict)  # metric name -> object computing it from files
    backends: dict[str, str] = field(default_factory=dict)
    implementations: dict[str, dict[str, Any]] = field(default_factory=dict)


def _try(build):
    try:
        return build(), None
    except Exception as e:  # noqa: BLE001  (a missing backend or weight file: reported, the run goes on)
        return None, f"{type(e).__name__}: {' '.join(str(e).split())}"


def weight_records(keys: Sequence[str], weights: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """{registry entry: {"path", "sha256"}} of the weight files a metric uses (sha256 of the file we read)."""
    from honestface.weights import file_sha256, resolve_weight

    out: dict[str, dict[str, str | None]] = {}
    for key in keys:
        path = resolve_weight(key, weights.get(key))
        out[key] = {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None}
    return out


def _record(suite: MetricSuite, names: Sequence[str], implementation: str, keys: Sequence[str],
            weights: dict[str, str]) -> None:
    rec, why = _try(lambda: weight_records(keys, weights))
    for n in names:
        suite.implementations[n] = {"implementation": implementation, "weights": rec or {}}
        if why:
            suite.implementations[n]["weights_error"] = why


def _build_iqa(names: list[str], device: str, weights: dict[str, str], batch_size: int, crop_border: int,
               skipped: dict[str, str]):
    """One IQAMetrics for all `names`; if that fails, find the metrics that do not build and skip them."""
    from honestface.metrics.iqa import IQAMetrics

    make = lambda ns: IQAMetrics(ns, device=device, weights=weights, batch_size=batch_size, crop_border=crop_border)
    iqa, reason = _try(lambda: make(names))
    if reason is None:
        return iqa, names
    good = []
    for n in names:
        _, why = _try(lambda n=n: make([n]))
        if why is None:
            good.append(n)
        else:
            skipped[n] = why
    iqa, reason = _try(lambda: make(good))
    if reason is not None:
        skipped.update(dict.fromkeys(good, reason))
        return None, []
    return iqa, good


def _build_published(name: str, device: str, weights: dict[str, str]) -> tuple[Any, str, tuple[str, ...]]:
    """(object, implementation text, registry entries) of a per-file published metric."""
    if name in ("psnr_vqfr", "ssim_vqfr"):
        from honestface.metrics.published_quality import SOURCE, VQFRPsnrSsim

        return VQFRPsnrSsim(), f"{SOURCE} (correct_mean_var on, RGB, crop_border 0)", ()
    if name == "lmd":
        from honestface.metrics.published_landmark import LMD_INFO, VQFRLandmarkDistance

        return VQFRLandmarkDistance(device=device, weights=weights), LMD_INFO["source"], tuple(LMD_INFO["weights"])
    from honestface.metrics.published_identity import PUBLISHED_IDENTITY, build_published_identity

    info = PUBLISHED_IDENTITY[name]
    return build_published_identity(name, device=device, weights=weights), info.source, tuple(info.weights)


def build_metrics(requested: Sequence[str] | None, refs: bool, lq: bool, device: str, batch_size: int,
                  weights: dict[str, str] | None = None, landmarks: str = "dlib68", detector: str = "dlib",
                  identity: str = "auto", set_columns: Sequence[tuple[str, str, str | None]] | None = None,
                  crop_border: int = 0) -> MetricSuite:
    """Choose and build the metrics. `requested=None`: every per-image metric that can run here, with our identity
    and landmark metrics for the configured backends. Unknown names raise ValueError; known but unavailable ones (no
    weights, no backend, no references) are skipped with the reason. `set_columns`: FID columns (key, metric,
    reference) in addition to a requested `fid` / `fid_basicsr`."""
    from honestface.metrics.iqa import available_metrics
    from honestface.metrics.protocols import NOT_IMPLEMENTED

    weights = dict(weights or {})
    iqa_info = iqa_metrics()
    names = expand(requested) if requested is not None else None
    if names is None:  # the default set: everything that runs here
        names = [n for n in iqa_info] + [n for n in PUBLISHED if n not in ("psnr_vqfr", "ssim_vqfr")]
        names += [f"ids_{identity}", f"idangle_{identity}"] if identity != "auto" else ["ids_auto", "idangle_auto"]
        names += [f"lmd_{landmarks}", *ALD_KEYS, *(REFERENCE_KEYS if refs else ())]
    skipped: dict[str, str] = {}
    suite = MetricSuite(columns=[], skipped=skipped)
    for n in names:
        if n in NOT_IMPLEMENTED:
            skipped[n] = NOT_IMPLEMENTED[n]
    # image quality, batched
    avail = available_metrics(weights)
    for n in names:
        if n in iqa_info and avail.get(n) is not None:
            skipped[n] = str(avail[n])
    iqa_names = [n for n in names if n in iqa_info and iqa_info[n].mode != "set" and n not in skipped]
    sets = []
    for key, metric, reference in set_columns or []:
        if avail.get(metric) is not None:
            skipped[key] = str(avail[metric])
        else:
            sets.append((key, metric, reference))
    sets += [(n, n, None) for n in names if n in iqa_info and iqa_info[n].mode == "set" and n not in skipped]
    if iqa_names or sets:
        suite.iqa, suite.iqa_names = _build_iqa(iqa_names, device, weights, batch_size, crop_border, skipped)
        if suite.iqa is None and sets:
            skipped.update({k: "the IQA metrics could not be built" for k, _, _ in sets})
            sets = []
    for n in suite.iqa_names + list(dict.fromkeys(m for _, m, _ in sets)):
        _record(suite, [n], iqa_info[n].implementation, iqa_info[n].weights, weights)
    suite.columns += suite.iqa_names
    suite.set_columns = sets
    # published protocols, computed from the files
    for n in [n for n in names if n in PUBLISHED]:
        shared = next((o for o in suite.published.values() if n in getattr(o, "names", ())), None)
        obj, reason = (shared, None) if shared is not None else _try(lambda n=n: _build_published(n, device, weights))
        if reason:
            skipped[n] = reason
            continue
        if shared is None:
            obj, text, keys = obj
            _record(suite, getattr(obj, "names", (n,)), text, keys, weights)
        suite.published[n] = obj
        suite.columns.append(n)
    # ours: landmark distance with a detector + landmarker, ALD
    lm_cols = [c for c in names if c.startswith("lmd_") or c in ALD_KEYS]
    wanted_lm = {c.removeprefix("lmd_") for c in lm_cols if c.startswith("lmd_")}
    if len(wanted_lm) > 1:
        raise ValueError(f"one landmarker per run: asked for {', '.join(sorted(wanted_lm))}")
    landmarks = next(iter(wanted_lm), landmarks)  # `lmd_<name>` names the landmarker; else eval.landmarks
    if lm_cols:
        from honestface.metrics.landmark import LandmarkMetrics

        suite.landmark, reason = _try(lambda: LandmarkMetrics(landmarker=landmarks, detector=detector, device=device))
        if reason:
            skipped.update(dict.fromkeys(lm_cols, reason))
        else:
            suite.columns += lm_cols
            suite.backends["landmarks"] = suite.landmark.name
            text = f"honestface.metrics.landmark ({suite.landmark.name}; ALD: our affine definition)"
            _record(suite, lm_cols, text, (), weights)
    # ours: identity cosine / angle with a detector + identity network, reference honesty
    id_cols = [c for c in names if c.startswith(("ids_", "idangle_")) and c != "ids_refldm"]
    ref_cols = [c for c in names if c in REFERENCE_KEYS]
    if ref_cols and not refs:
        skipped.update(dict.fromkeys(ref_cols, "needs a references folder (--refs)"))
        ref_cols = []
    if ref_cols and not lq:
        skipped.update({c: "needs the LQ inputs (--lq)" for c in ref_cols if c != "ref_ids"})
        ref_cols = [c for c in ref_cols if c == "ref_ids"]
    wanted_id = {c.split("_", 1)[1] for c in id_cols}
    if len(wanted_id) > 1:
        raise ValueError(f"one identity network per run: asked for {sorted(wanted_id)}")
    backend = next(iter(wanted_id), identity)
    if id_cols or ref_cols:
        from honestface.metrics.identity import IdentityMetrics

        suite.identity, reason = _try(lambda: IdentityMetrics(backend=backend, device=device, detector=detector))
        if reason:
            skipped.update(dict.fromkeys(id_cols + ref_cols, reason))
        else:
            real = suite.identity.name
            id_cols = [c.replace("_auto", f"_{real}") for c in id_cols]
            suite.columns += id_cols + ref_cols
            suite.backends["identity"] = real
            text = f"honestface.metrics.identity (network {real}, detector {detector})"
            _record(suite, id_cols + ref_cols, text, (), weights)
    return suite
