"""Evaluation protocols: the metric set, settings and column order of a published results table.

A protocol names, for one paper's table, which of our metrics fills each column (always a metric that computes the
number the way that paper's scripts do, see docs/metrics.md), in the paper's order, with the FID reference of each
FID column. `scripts/evaluate.py --protocol NAME` computes exactly those columns and writes `table.md` in that
shape, next to the paper's own published rows where we have them, and records the protocol, the test-set label and
every implementation in `summary.json`.

Sources (column order, published numbers, the scripts behind each column):
- `osdface`: OSDFace (Wang et al., CVPR 2025) Table 1 on the DAEFR CelebA-Test set: LPIPS, DISTS, MUSIQ, NIQE,
  Deg., LMD, FID(FFHQ), FID(HQ); OSDFace row as published (also QuantFace Table 1). OSDFace computes the image
  metrics with pyiqa; Deg. and LMD are the VQFR scripts (TencentARC/VQFR:metric_paper/calculate_cos_dist.py,
  calculate_landmark_distance.py: their scale, 60 degrees and 5.3 px, is that of those scripts on this set).
- `vqfr`: VQFR (Gu et al., ECCV 2022) Table 1 (GFPGAN CelebA-Test): LPIPS, FID, NIQE, Deg., LMD, PSNR, SSIM, all
  from TencentARC/VQFR:metric_paper/*.py (LPIPS: the lpips package's VGG on [-1, 1]; PSNR / SSIM: BasicSR RGB
  after VQFR's mean/variance correction; FID: BasicSR pytorch-fid Inception against `inception_FFHQ_512.pth`).
- `pmrf`: PMRF (Ohayon et al., ICLR 2025) CelebA-Test table (GFPGAN set): PSNR, SSIM, LPIPS, Deg., LMD, FID, NIQE
  from ohayonguy/PMRF:evaluation/compute_metrics_blind.py (BasicSR `calculate_psnr_pt` / `calculate_ssim_pt` RGB,
  lpips VGG, the VQFR Deg. / LMD scripts); published rows for CodeFormer and GFPGAN.
- `ntire2026`: the NTIRE 2026 real-world face restoration score
  CLIPIQA + MANIQA + MUSIQ/100 + max(0, (10 - NIQE)/10) + QALIGN/5 + max(0, (100 - FID)/100), FID against the FFHQ
  512 statistics (jkwang28/NTIRE2026_RealWorld_Face_Restoration:eval.py).
- `honestface`: HonestFace (Wang et al., arXiv 2505.18469) Table 1: LPIPS, DISTS, C-IQA, M-IQA, MUSIQ, FID, Deg.,
  L2-LD, ALD-e, ALD-m; HonestFace's row on CelebHQRef-Test as published.

Our choices (each stated in the protocol's notes and so in every report): OSDFace publishes no FID script; both of
its FID columns use the BasicSR/VQFR FID (`fid_basicsr`), the convention of the DAEFR set it evaluates on, against
the FFHQ-512 statistics and against the test set's HQ folder. VQFR and PMRF compute NIQE with BasicSR's
`calculate_niqe(convert_to='y')`; we fill that column with pyiqa's `niqe` (the same MATLAB model; not verified
equal). PMRF's FID comes from torch-fidelity against a folder of FFHQ images, which this library does not
implement: that column is reported as not computed. HonestFace's ALD definition is not public: its ALD columns are
filled with ours (docs/metrics.md) and cannot be compared with the paper's numbers; its FID reference is not stated
(we use the FFHQ-512 statistics). NTIRE's Q-Align needs a 7B model (pyiqa `qalign`) that this library does not
run: the score is computed only when every term is present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

FFHQ_STATS = "fid_ffhq512_stats"  # registry entry of BasicSR's inception_FFHQ_512.pth
GT = "gt"  # reference "gt": the evaluated test set's ground-truth folder

# Columns of published tables that this library does not compute: always reported as skipped, with the reason.
NOT_IMPLEMENTED = {
    "qalign": "Q-Align (pyiqa 'qalign', mPLUG-Owl2 7B) is not run by honestface",
    "fid_torch_fidelity": "torch-fidelity's FID against an FFHQ-512 image folder (PMRF) is not implemented",
}


@dataclass(frozen=True)
class Column:
    """One column of a paper's table: its header, the metric that fills it, and for FID its reference."""

    label: str
    metric: str
    reference: str | None = None  # set-level metrics only: GT or a registry entry / statistics file

    @property
    def key(self) -> str:
        """The name of this column's number in our results (`fid_basicsr@gt`, `lpips`, ...)."""
        return self.metric if self.reference is None else f"{self.metric}@{self.reference}"


@dataclass(frozen=True)
class Protocol:
    """A published table: columns in order, the test sets it was reported on, the paper's own rows."""

    name: str
    title: str
    columns: tuple[Column, ...]
    test_sets: tuple[str, ...]
    published: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)  # method -> one value per column
    published_test_set: str | None = None  # the test-set label the published rows belong to
    notes: tuple[str, ...] = ()
    score: str | None = None  # name of a composite score computed from the columns ("ntire2026")
    crop_border: int = 0

    def __post_init__(self) -> None:
        for method, row in self.published.items():
            if len(row) != len(self.columns):
                raise ValueError(f"protocol {self.name}: published row {method} has {len(row)} values, "
                                 f"expected {len(self.columns)}")

    @property
    def image_metrics(self) -> list[str]:
        """Per-image metric names (everything but FID), in column order."""
        return list(dict.fromkeys(c.metric for c in self.columns if c.reference is None))

    @property
    def set_columns(self) -> list[Column]:
        """The FID columns (metric + reference)."""
        return [c for c in self.columns if c.reference is not None]


def ntire2026_score(values: Mapping[str, float | None]) -> tuple[float | None, str | None]:
    """(score, None) or (None, why): CLIPIQA + MANIQA + MUSIQ/100 + max(0, (10 - NIQE)/10) + QALIGN/5
    + max(0, (100 - FID)/100), from {metric key: value}."""
    need = {"clipiqa": "clipiqa", "maniqa": "maniqa", "musiq": "musiq", "niqe": "niqe", "qalign": "qalign",
            "fid": f"fid_basicsr@{FFHQ_STATS}"}
    missing = [k for k, key in need.items() if values.get(key) is None or not math.isfinite(values[key])]
    if missing:
        return None, f"needs {', '.join(missing)}"
    v = {k: float(values[key]) for k, key in need.items()}
    score = (v["clipiqa"] + v["maniqa"] + v["musiq"] / 100 + max(0.0, (10 - v["niqe"]) / 10) + v["qalign"] / 5
             + max(0.0, (100 - v["fid"]) / 100))
    return score, None


SCORES = {"ntire2026": ntire2026_score}

_FID_FFHQ = Column("FID(FFHQ)", "fid_basicsr", FFHQ_STATS)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol(
        "osdface", "OSDFace (Wang et al., CVPR 2025), Table 1",
        (Column("LPIPS", "lpips"), Column("DISTS", "dists"), Column("MUSIQ", "musiq"), Column("NIQE", "niqe"),
         Column("Deg.", "deg"), Column("LMD", "lmd"), _FID_FFHQ, Column("FID(HQ)", "fid_basicsr", GT)),
        test_sets=("celeba-test-daefr",),
        published={"OSDFace": (0.3365, 0.1773, 75.64, 3.884, 60.0708, 5.287, 45.41, 17.06)},
        published_test_set="celeba-test-daefr",
        notes=("FID(FFHQ) and FID(HQ): BasicSR/VQFR FID (OSDFace publishes no FID script; our choice).",),
    ),
    Protocol(
        "vqfr", "VQFR (Gu et al., ECCV 2022), Table 1",
        (Column("LPIPS", "lpips_vgg"), _FID_FFHQ, Column("NIQE", "niqe"), Column("Deg.", "deg"),
         Column("LMD", "lmd"), Column("PSNR", "psnr_vqfr"), Column("SSIM", "ssim_vqfr")),
        test_sets=("celeba-test-gfpgan",),
        notes=(("NIQE: pyiqa niqe in place of BasicSR calculate_niqe(convert_to='y') (same MATLAB model; "
               "not verified equal)."),),
    ),
    Protocol(
        "pmrf", "PMRF (Ohayon et al., ICLR 2025), CelebA-Test table",
        (Column("PSNR", "psnr"), Column("SSIM", "ssim_rgb"), Column("LPIPS", "lpips_vgg"),
         Column("Deg.", "deg"), Column("LMD", "lmd"), Column("FID", "fid_torch_fidelity", "ffhq512_folder"),
         Column("NIQE", "niqe")),
        test_sets=("celeba-test-gfpgan",),
        published={"CodeFormer": (25.15, 0.6700, 0.3432, 37.28, 2.470, None, None),
                   "GFPGAN": (24.99, 0.6774, 0.3643, 36.05, 2.443, None, None)},
        published_test_set="celeba-test-gfpgan",
        notes=(("PSNR / SSIM: BasicSR calculate_psnr_pt / calculate_ssim_pt on RGB in [0, 1] are our `psnr` (RGB) and "
               "`ssim_rgb` (Gaussian SSIM averaged over R, G, B)."),
               "FID: PMRF uses torch-fidelity against a folder of FFHQ-512 images; not implemented here.",
               "NIQE: pyiqa niqe in place of BasicSR calculate_niqe(convert_to='y') (not verified equal)."),
    ),
    Protocol(
        "ntire2026", "NTIRE 2026 real-world face restoration challenge score",
        (Column("CLIPIQA", "clipiqa"), Column("MANIQA", "maniqa"), Column("MUSIQ", "musiq"),
         Column("NIQE", "niqe"), Column("Q-Align", "qalign"), _FID_FFHQ),
        test_sets=("wider-test", "lfw-test", "webphoto-test", "celebchild-test", "ntire2026-val", "ntire2026-test"),
        score="ntire2026",
        notes=("Q-Align (pyiqa qalign, a 7B model) is not run by this library: the score needs it.",
               "The challenge's ID_Sim filter against the LQ input (AdaFace IR-50) is not applied."),
    ),
    Protocol(
        "honestface", "HonestFace (Wang et al., arXiv 2505.18469), Table 1",
        (Column("LPIPS", "lpips"), Column("DISTS", "dists"), Column("C-IQA", "clipiqa"), Column("M-IQA", "maniqa"),
         Column("MUSIQ", "musiq"), _FID_FFHQ, Column("Deg.", "deg"), Column("L2-LD", "lmd"),
         Column("ALD-e", "ald_e"), Column("ALD-m", "ald_m")),
        test_sets=("celebhqref-test", "reface-test"),
        published={"HonestFace": (0.1809, 0.1246, 0.6673, 0.6858, 71.996, 41.021, 26.106, 1.7798, 13.444, 8.9793)},
        published_test_set="celebhqref-test",
        notes=(("ALD-e / ALD-m: our definition (docs/metrics.md); the paper's is not public, so these two columns "
               "are not comparable with its numbers."),
               "FID: BasicSR/VQFR FID against the FFHQ-512 statistics (the paper does not say which; our choice).",
               "Deg. / L2-LD: the VQFR scripts (the paper's numbers sit on their scale)."),
    ),
)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; allowed: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
