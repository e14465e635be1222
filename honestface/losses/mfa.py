"""Masked Face Alignment loss L_MFA of HonestFace (arXiv 2505.18469), in our own definition.

The paper names L_MFA (a loss between x̂_H and x_H, drawn in its pipeline figure) and says it "enhances fine-grained
details and textural authenticity, preventing patterned or overly synthetic textures"; its formula is not public.
Everything below is therefore our definition (documented with equations in docs/losses.md):

    L_MFA = λ_f Σ_r w_r F_r + λ_t Σ_r w_r T_r + λ_ref Σ_r w_r T^ref_r

- r runs over facial regions (eyes, brows, nose, lips, skin by default) given as soft masks m_r (B, R, H, W) of the
  target face, from a face parser or landmark polygons (`build_region_masks`).
- F_r: per layer l of a frozen perceptual network φ (VGG-16, `features.VGGFeatures`), the L1 distance between
  φ_l(x̂) and φ_l(x) averaged over channels and over the mask resized to that layer (area downsampling),
  normalised by the mask's area; layers are combined with `layer_weights` (default: mean).
- T_r: texture statistics of φ_l inside the mask, Gram matrix (default) or channel mean/std, weighted by the soft
  mask, matched to the target's with L1 (default) or MSE.
- T^ref_r (the "alignment" part): each reference is warped onto the target by a least-squares similarity (or affine)
  fitted to the landmarks (`reference_align="global"`: all points; "region": the region's own points), and x̂'s
  statistics are matched to the mean statistics of the valid references inside the target's masks times the
  warped-validity mask. Padded references (ref_mask False) and K = 0 give 0.
- Samples whose region is empty (area 0 at a layer) are left out of that region's batch mean.

Our choices (not the paper's): the VGG-16 layers relu1_2..relu4_3, region weights eyes 1.0, lips 1.0, brows 0.5,
nose 0.5, skin 0.5 (the eyes and mouth carry identity and are where one-step models paint patterned textures;
skin is large and its statistics are the most lighting-dependent; brows and nose are low-texture), texture and
reference weights 1.0 and 0.5 (a reference is another photo, in other light and pose, so it pulls less than x).
Pixels outside every mask affect the loss only through the network's receptive field at the mask border
(relu4_3: 92 px, plus one feature cell of 8 px).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from honestface.face.alignment import estimate_similarity_torch, warp_affine_torch
from honestface.face.schemes import LandmarkScheme, get_scheme
from honestface.losses.features import DEFAULT_LAYERS, VGGFeatures

DEFAULT_REGIONS = ("eyes", "brows", "nose", "lips", "skin")
DEFAULT_REGION_WEIGHTS = {"eyes": 1.0, "brows": 0.5, "nose": 0.5, "lips": 1.0, "skin": 0.5, "inner_mouth": 0.5,
                          "face": 0.5}
# landmark component whose points align a reference to the target for a region (reference_align="region")
REGION_COMPONENTS = {"eyes": "eyes", "brows": "brows", "nose": "nose", "lips": "mouth", "inner_mouth": "mouth",
                     "skin": "all", "face": "all"}
TEXTURES = ("gram", "meanstd")
DISTANCES = ("l1", "mse")
_EPS = 1e-6


# ------------------------------------------------------------------------------------------------------ masks


def _gaussian_blur(masks: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, R, H, W) masks, zero border (as masks.py's cv2.BORDER_CONSTANT)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=masks.dtype, device=masks.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    b, r, h, w = masks.shape
    y = masks.reshape(b * r, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0)), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius)), k.view(1, 1, -1, 1))
    return y.reshape(b, r, h, w).clamp(0.0, 1.0)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, R, H, W) -> (B, R, h, w): area averaging when shrinking, bilinear when growing."""
    h, w = int(size[0]), int(size[1])
    if tuple(masks.shape[-2:]) == (h, w):
        return masks
    if h <= masks.shape[-2] and w <= masks.shape[-1]:
        return F.adaptive_avg_pool2d(masks, (h, w))
    return F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def build_region_masks(
    landmarks=None,
    scheme: LandmarkScheme | str = "dlib68",
    labels=None,
    size: tuple[int, int] | None = None,
    regions: Sequence[str] = DEFAULT_REGIONS,
    feather: float = 0.0,
    classes: str = "bisenet",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Region masks of the target faces for `MaskedFaceAlignmentLoss`: (B, R, H, W) float32, R in `regions` order.

    `labels` (B, H, W) parsing label maps (class table `classes`) are used when given; else `landmarks` (B, P, 2)
    in pixels of a `size` = (H, W) image (polygons of `honestface.face.masks`). `feather`: Gaussian sigma (px).
    """
    from honestface.face.masks import region_masks_torch
    from honestface.face.parsing import parsing_region_masks

    regions = tuple(regions)
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather}")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.ndim != 3:
            raise ValueError(f"labels must be (B, H, W) parsing label maps, got shape {tuple(labels.shape)}")
        device = labels.device if device is None else torch.device(device)
        parts = parsing_region_masks(labels.to(device), classes, regions)
        masks = torch.stack([parts[r] for r in regions], 1)  # (B, R, h, w)
        masks = resize_masks(masks, size) if size is not None else masks
        return _gaussian_blur(masks, feather) if feather > 0 else masks
    if landmarks is None:
        raise ValueError("build_region_masks needs parsing `labels` or `landmarks`")
    if size is None:
        raise ValueError("build_region_masks: `size` (H, W) is required with landmarks")
    return region_masks_torch(landmarks, scheme, size, regions=regions, feather=feather, device=device)


# ------------------------------------------------------------------------------------------------- statistics


def masked_statistics(
    features: torch.Tensor, masks: torch.Tensor, kind: str = "gram"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-mask-weighted texture statistics: features (B, C, h, w), masks (B, R, h, w) at the same size.

    Returns (stats (B, R, S), area (B, R)); gram: S = C*C, G = Σ m φ φᵀ / (C Σ m); meanstd: S = 2C (mean, std).
    """
    if kind not in TEXTURES:
        raise ValueError(f"unknown texture statistic {kind!r}; allowed: {', '.join(TEXTURES)}")
    with torch.autocast(features.device.type, enabled=False):  # float32 sums, also under mixed precision
        return _statistics(features.float(), masks.float(), kind)


def _statistics(features: torch.Tensor, masks: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    f = features.flatten(2)  # (B, C, N)
    m = masks.flatten(2)  # (B, R, N)
    c = f.shape[1]
    area = m.sum(-1)  # (B, R)
    denom = area.clamp_min(_EPS)[..., None]
    if kind == "meanstd":
        mean = torch.einsum("brn,bcn->brc", m, f) / denom
        var = (torch.einsum("brn,bcn->brc", m, f * f) / denom - mean**2).clamp_min(0.0)
        return torch.cat([mean, torch.sqrt(var + 1e-5)], -1), area
    grams = [((f * m[:, r, None]) @ f.transpose(1, 2)).flatten(1) for r in range(m.shape[1])]  # R x (B, C*C)
    return torch.stack(grams, 1) / (denom * c), area


def _distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, R, S) x2 -> (B, R)."""
    d = a - b
    return d.abs().mean(-1) if kind == "l1" else (d * d).mean(-1)


def _batch_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, R) values, (B, R) bool -> (R,) mean over the valid samples (0 where none)."""
    v = valid.to(values.dtype)
    return (values * v).sum(0) / v.sum(0).clamp_min(1.0)


# --------------------------------------------------------------------------------------------------- warping


def estimate_affine_torch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares 2-D affine taking src onto dst: (N, P, 2), (N, P, 2) with P >= 3 -> (N, 2, 3)."""
    if src.shape[-2] < 3:
        raise ValueError(f"an affine fit needs >= 3 points, got {src.shape[-2]}")
    x = torch.cat([src, torch.ones_like(src[..., :1])], -1)  # (N, P, 3)
    xtx = x.transpose(1, 2) @ x  # (N, 3, 3)
    sol = torch.linalg.solve(xtx, x.transpose(1, 2) @ dst)  # (N, 3, 2)
    return sol.transpose(1, 2)


def warp_to_target(
    images: torch.Tensor,
    src_points: torch.Tensor,
    dst_points: torch.Tensor,
    size: tuple[int, int],
    transform: str = "similarity",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp images onto the target frame by a landmark fit src -> dst.

    images (N, 3, h, w), src_points (N, P, 2) in image pixels, dst_points (N, P, 2) in target pixels.
    Returns (warped (N, 3, H, W) with a replicated border, validity (N, 1, H, W) in [0, 1]: 0 off the source).
    """
    wide = torch.float32 if images.device.type == "mps" else torch.float64
    src, dst = src_points.to(images.device, wide), dst_points.to(images.device, wide)
    if transform == "similarity":
        mat = estimate_similarity_torch(src, dst)
    elif transform == "affine":
        mat = estimate_affine_torch(src, dst)
    else:
        raise ValueError(f"unknown reference transform {transform!r}; allowed: similarity, affine")
    warped = warp_affine_torch(images, mat, size, border="replicate")
    ones = torch.ones_like(images[:, :1])
    return warped, warp_affine_torch(ones, mat, size, border="constant").clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------------------- loss


class MaskedFaceAlignmentLoss(nn.Module):
    """L_MFA (our definition, see the module docstring). forward -> (loss scalar, {term: detached value}).

    `feature_extractor`: any frozen module mapping (B, 3, H, W) in [-1, 1] to {layer: (B, C, h, w)} holding `layers`
    (pass one `VGGFeatures` to share it between losses); else a VGGFeatures is built from `weights` /
    `random_init`. `region_weights` override DEFAULT_REGION_WEIGHTS per region name. `scheme` (landmark layout)
    is needed only for `reference_align="region"`.
    """

    def __init__(
        self,
        regions: Sequence[str] = DEFAULT_REGIONS,
        region_weights: dict[str, float] | None = None,
        layers: Sequence[str] = DEFAULT_LAYERS,
        layer_weights: Sequence[float] | None = None,
        feature_weight: float = 1.0,
        texture_weight: float = 1.0,
        texture: str = "gram",
        texture_distance: str = "l1",
        use_references: bool = True,
        reference_weight: float = 0.5,
        reference_align: str = "global",
        reference_transform: str = "similarity",
        scheme: LandmarkScheme | str = "dlib68",
        feature_extractor: nn.Module | None = None,
        weights: str | os.PathLike | None = None,
        random_init: bool = False,
    ) -> None:
        super().__init__()
        self.regions = tuple(regions)
        unknown = [r for r in self.regions if r not in DEFAULT_REGION_WEIGHTS]
        if not self.regions or unknown:
            raise ValueError(f"bad MFA regions {list(self.regions)}; allowed: {', '.join(DEFAULT_REGION_WEIGHTS)}")
        weights_by_region = {**DEFAULT_REGION_WEIGHTS, **(region_weights or {})}
        extra = sorted(set(region_weights or {}) - set(self.regions))
        if extra:
            raise ValueError(f"region_weights for region(s) {extra} not in regions {list(self.regions)}")
        self.region_weights = [float(weights_by_region[r]) for r in self.regions]
        self.layers = tuple(layers)
        if not self.layers:
            raise ValueError("MaskedFaceAlignmentLoss needs at least one feature layer")
        if layer_weights is None:
            layer_weights = [1.0 / len(self.layers)] * len(self.layers)
        if len(layer_weights) != len(self.layers):
            raise ValueError(f"layer_weights has {len(layer_weights)} entries for {len(self.layers)} layers")
        self.layer_weights = [float(w) for w in layer_weights]
        if texture not in TEXTURES:
            raise ValueError(f"unknown texture statistic {texture!r}; allowed: {', '.join(TEXTURES)}")
        if texture_distance not in DISTANCES:
            raise ValueError(f"unknown texture distance {texture_distance!r}; allowed: {', '.join(DISTANCES)}")
        if reference_align not in ("global", "region"):
            raise ValueError(f"unknown reference_align {reference_align!r}; allowed: global, region")
        if reference_transform not in ("similarity", "affine"):
            raise ValueError(f"unknown reference_transform {reference_transform!r}; allowed: similarity, affine")
        self.feature_weight, self.texture_weight = float(feature_weight), float(texture_weight)
        self.reference_weight, self.use_references = float(reference_weight), bool(use_references)
        self.texture, self.texture_distance = texture, texture_distance
        self.reference_align, self.reference_transform = reference_align, reference_transform
        self.scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
        if feature_extractor is None:
            feature_extractor = VGGFeatures(self.layers, weights=weights, random_init=random_init)
        self.features = feature_extractor

    # -------------------------------------------------------------------------------------------- helpers
    def _extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        out = self.features(images)
        missing = [name for name in self.layers if name not in out]
        if missing:
            raise KeyError(f"the feature extractor returned no layer(s) {missing}; it gives {list(out)}")
        return [out[name] for name in self.layers]

    def region_statistics(self, images: torch.Tensor, masks: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (stats (B, R, S), area (B, R)) of images (B, 3, H, W) inside masks (B, R, H', W')."""
        return [
            masked_statistics(f, resize_masks(masks.to(f.device, torch.float32), f.shape[-2:]), self.texture)
            for f in self._extract(images)
        ]

    def _alignment_groups(self) -> list[tuple[torch.Tensor | None, list[int]]]:
        """[(landmark indices or None for all points, region indices aligned by them)]."""
        if self.reference_align == "global":
            return [(None, list(range(len(self.regions))))]
        groups: dict[str, list[int]] = {}
        for i, region in enumerate(self.regions):
            comp = REGION_COMPONENTS[region]
            if comp != "all" and len(self.scheme.indices(comp)) < 3:
                comp = "all"  # too few points for a fit (e.g. the 5-point nose): align on the whole face
            groups.setdefault(comp, []).append(i)
        return [(None if c == "all" else torch.as_tensor(self.scheme.indices(c)), idx) for c, idx in groups.items()]

    def reference_statistics(self, refs, ref_landmarks, target_landmarks, masks, ref_mask=None):
        """Mean statistics of the valid references warped onto the target, per layer.

        refs (B, K, 3, h, w), ref_landmarks (B, K, P, 2) in reference pixels, target_landmarks (B, P, 2) in target
        pixels, masks (B, R, H, W) at the target image size, ref_mask (B, K) bool. Returns None when no reference
        is valid, else per layer (mean stats (B, R, S), count (B, R)): count = references with a non-empty region.
        """
        b, k = refs.shape[:2]
        size = tuple(masks.shape[-2:])
        if ref_landmarks is None or target_landmarks is None:
            raise ValueError("the MFA reference term needs ref_landmarks (B, K, P, 2) and target_landmarks (B, P, 2)")
        ref_landmarks, target_landmarks = torch.as_tensor(ref_landmarks), torch.as_tensor(target_landmarks)
        if tuple(ref_landmarks.shape[:2]) != (b, k) or target_landmarks.shape[0] != b:
            raise ValueError(f"ref_landmarks {tuple(ref_landmarks.shape)} / target_landmarks "
                             f"{tuple(target_landmarks.shape)} do not match refs {tuple(refs.shape)}")
        if self.reference_align == "region" and ref_landmarks.shape[-2] != self.scheme.num_points:
            raise ValueError(f"reference_align='region' uses scheme {self.scheme.name!r} ({self.scheme.num_points} "
                             f"points), but the landmarks have {ref_landmarks.shape[-2]}")
        valid = torch.ones(b, k, dtype=torch.bool) if ref_mask is None else torch.as_tensor(ref_mask).bool()
        if tuple(valid.shape) != (b, k):
            raise ValueError(f"ref_mask must be (B, K) = {(b, k)}, got {tuple(valid.shape)}")
        bi, ki = valid.to(refs.device).nonzero(as_tuple=True)  # (N,), (N,)
        if bi.numel() == 0:
            return None
        images, src = refs[bi, ki], ref_landmarks.to(refs.device)[bi, ki]  # (N, 3, h, w), (N, P, 2)
        dst = target_landmarks.to(refs.device)[bi]  # (N, P, 2)
        sums: list[torch.Tensor | None] = [None] * len(self.layers)
        counts = [torch.zeros(b, len(self.regions), device=refs.device) for _ in self.layers]
        for pts, regs in self._alignment_groups():
            s_pts, d_pts = (src, dst) if pts is None else (src[:, pts], dst[:, pts])
            warped, vis = warp_to_target(images, s_pts, d_pts, size, self.reference_transform)
            region_masks = masks.to(refs.device, torch.float32)[bi][:, regs] * vis  # (N, R_g, H, W)
            stats = self.region_statistics(warped, region_masks)
            for l, (st, area) in enumerate(stats):
                ok = (area > _EPS).float()  # (N, R_g)
                if sums[l] is None:
                    sums[l] = st.new_zeros(b, len(self.regions), st.shape[-1])
                sums[l][:, regs] += torch.zeros_like(sums[l][:, regs]).index_add_(0, bi, st * ok[..., None])
                counts[l][:, regs] += torch.zeros_like(counts[l][:, regs]).index_add_(0, bi, ok)
        return [(s / c.clamp_min(1.0)[..., None], c) for s, c in zip(sums, counts)]

    # -------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        x_hat: torch.Tensor,
        x: torch.Tensor,
        masks: torch.Tensor,
        refs: torch.Tensor | None = None,
        ref_landmarks: torch.Tensor | None = None,
        ref_mask: torch.Tensor | None = None,
        target_landmarks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_hat, x (B, 3, H, W) in [-1, 1]; masks (B, R, H', W') in `regions` order; refs (B, K, 3, h, w)."""
        if x_hat.ndim != 4 or x_hat.shape[1] != 3 or x.shape != x_hat.shape:
            raise ValueError(f"x_hat and x must both be (B, 3, H, W), got {tuple(x_hat.shape)} and {tuple(x.shape)}")
        b, r = x.shape[0], len(self.regions)
        if masks.ndim != 4 or masks.shape[0] != b or masks.shape[1] != r:
            raise ValueError(f"masks must be (B={b}, R={r} for {list(self.regions)}, H, W), got {tuple(masks.shape)}")
        masks = masks.to(x_hat.device, torch.float32)
        feats_hat = self._extract(x_hat)
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            feats = self._extract(x)
        ref_stats = None
        if self.use_references and refs is not None and refs.shape[1] > 0:
            if refs.ndim != 5 or refs.shape[0] != b or refs.shape[2] != 3:
                raise ValueError(f"refs must be (B={b}, K, 3, h, w), got {tuple(refs.shape)}")
            with torch.no_grad():
                ref_stats = self.reference_statistics(
                    refs, ref_landmarks, target_landmarks, resize_masks(masks, x.shape[-2:]), ref_mask
                )
        with torch.autocast(x_hat.device.type, enabled=False):  # the loss arithmetic in float32
            return self._combine(feats_hat, feats, masks, ref_stats)

    def _combine(self, feats_hat, feats, masks, ref_stats) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        zero = masks.new_zeros(masks.shape[1])
        feat_r, tex_r, ref_r = zero, zero, zero  # (R,) each, summed over layers
        for l, (lw, fh, f) in enumerate(zip(self.layer_weights, feats_hat, feats)):
            m = resize_masks(masks, fh.shape[-2:])  # (B, R, h, w)
            diff = (fh.float() - f.float()).abs().mean(1).flatten(1)  # (B, h*w)
            area = m.flatten(2).sum(-1)  # (B, R)
            per = torch.einsum("brn,bn->br", m.flatten(2), diff) / area.clamp_min(_EPS)
            feat_r = feat_r + lw * _batch_mean(per, area > _EPS)
            sh, _ = masked_statistics(fh, m, self.texture)  # (B, R, S)
            st, _ = masked_statistics(f, m, self.texture)
            tex_r = tex_r + lw * _batch_mean(_distance(sh, st, self.texture_distance), area > _EPS)
            if ref_stats is not None:
                sr, count = ref_stats[l]
                d = _distance(sh, sr.to(sh.device), self.texture_distance)
                ref_r = ref_r + lw * _batch_mean(d, (area > _EPS) & (count.to(area.device) > 0))
        w = torch.tensor(self.region_weights, device=zero.device)
        feature, texture, reference = (w * feat_r).sum(), (w * tex_r).sum(), (w * ref_r).sum()
        loss = self.feature_weight * feature + self.texture_weight * texture + self.reference_weight * reference
        terms = {"feature": feature, "texture": texture, "reference": reference}
        for i, region in enumerate(self.regions):
            terms.update({f"feature/{region}": feat_r[i], f"texture/{region}": tex_r[i],
                          f"reference/{region}": ref_r[i]})
        return loss, {k: v.detach() for k, v in terms.items()}
