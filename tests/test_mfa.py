"""Masked Face Alignment loss (our definition): zero on identical images, local to the masks, region weights,
reference statistics through a landmark warp, frozen VGG, clear errors. Random-init VGG, 64-128 px, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from honestface.data import samples
from honestface.face.alignment import align_face, template
from honestface.face.schemes import DLIB68
from honestface.losses.features import DEFAULT_LAYERS, VGGFeatures
from honestface.losses.mfa import (
    DEFAULT_REGIONS,
    MaskedFaceAlignmentLoss,
    build_region_masks,
    warp_to_target,
)
from honestface.weights import MissingWeightError

EYE_IOU = 0.8  # intersection over union of two rasterisations of the same hulls: measured 0.86 (366/426 px)

SIZE = 64


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures(DEFAULT_LAYERS, random_init=True)


@pytest.fixture(scope="module")
def vgg_shallow() -> VGGFeatures:
    torch.manual_seed(0)
    return VGGFeatures(("relu1_2",), random_init=True)


def _crop(img: np.ndarray, pts: np.ndarray, dst: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity-align `img` so its 5 points land on `dst`; returns (image (3, S, S) in [-1, 1], points (68, 2))."""
    crop, m = align_face(img, DLIB68.to_five(pts), dst, size)
    crop_pts = pts @ m[:, :2].T + m[:, 2]
    x = torch.from_numpy(crop.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
    return x, torch.from_numpy(crop_pts).float()


@pytest.fixture(scope="module")
def face():
    """The astronaut: target crop, its dlib-68 points, and a rotated / shrunk / shifted second view of it."""
    from honestface.face.detection import build_detector
    from honestface.face.landmarks import build_landmarker

    img = samples.astronaut()
    box = build_detector("dlib").detect(img)[0].box
    pts = build_landmarker("dlib68").predict(img, box[None])[0]  # (68, 2) in the photo
    dst = template("ffhq", SIZE)
    x, lm = _crop(img, pts, dst, SIZE)
    a, c = np.deg2rad(12.0), dst.mean(0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    ref, ref_lm = _crop(img, pts, (dst - c) @ rot.T * 0.85 + c + [3.0, -2.0], SIZE)
    return {"x": x[None], "lm": lm[None], "ref": ref[None], "ref_lm": ref_lm[None]}


def _masks(lm: torch.Tensor, regions=DEFAULT_REGIONS, size: int = SIZE) -> torch.Tensor:
    return build_region_masks(landmarks=lm, scheme="dlib68", size=(size, size), regions=regions)


def _noisy(x: torch.Tensor, seed: int = 1, scale: float = 0.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + scale * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def test_zero_on_identical_positive_otherwise_and_gradients(face, vgg):
    loss_fn = MaskedFaceAlignmentLoss(feature_extractor=vgg)
    x, masks = face["x"], _masks(face["lm"])
    assert masks.shape == (1, 5, SIZE, SIZE) and (masks.flatten(2).sum(-1) > 0).all()
    loss, terms = loss_fn(x, x, masks)
    assert loss.item() == 0.0 and all(v.item() == 0.0 for v in terms.values())
    x_hat = _noisy(x).requires_grad_()
    loss, terms = loss_fn(x_hat, x, masks)
    assert loss.ndim == 0 and loss.item() > 0
    for region in DEFAULT_REGIONS:
        assert terms[f"feature/{region}"] > 0 and terms[f"texture/{region}"] > 0, region
    loss.backward()
    assert x_hat.grad is not None and torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    # the mean/std statistics and the MSE distance also vanish on identical images and not otherwise
    alt = MaskedFaceAlignmentLoss(feature_extractor=vgg, texture="meanstd", texture_distance="mse")
    assert alt(x, x, masks)[0].item() == 0.0 and alt(x_hat.detach(), x, masks)[1]["texture"] > 0


def test_only_pixels_under_the_masks_count(vgg, vgg_shallow):
    torch.manual_seed(3)
    size = 128
    x = torch.rand(1, 3, size, size) * 2 - 1
    x_hat = _noisy(x, seed=4)
    masks = torch.zeros(1, 2, size, size)
    masks[:, 0, 4:16, 6:22] = 1.0  # "eyes": a small box in the top-left corner
    masks[:, 1, 12:26, 2:20] = 0.5  # "lips": soft and overlapping
    loss_fn = MaskedFaceAlignmentLoss(regions=("eyes", "lips"), feature_extractor=vgg)
    base = loss_fn(x_hat, x, masks)[0].item()
    far, near = x_hat.clone(), x_hat.clone()
    far[..., 100:, 100:] = -far[..., 100:, 100:]  # > 70 px from the masks: beyond relu4_3's receptive field
    near[..., 6:14, 8:20] = -near[..., 6:14, 8:20]  # inside the eye box
    assert abs(loss_fn(far, x, masks)[0].item() - base) <= 1e-6 * base
    assert abs(loss_fn(near, x, masks)[0].item() - base) > 1e-2 * base
    # with default layers the gradient is exactly zero beyond the receptive-field reach (92 px + one 8 px cell)
    x_hat.requires_grad_()
    loss_fn(x_hat, x, masks)[0].backward()
    grad = x_hat.grad.abs().sum(1)[0]  # (H, W)
    assert grad[:26, :22].sum() > 0 and grad[80:, :].sum() == 0 and grad[:, 80:].sum() == 0
    # relu1_2 sees a 5x5 window: the gradient lives exactly in the masks' union dilated by 2 px
    x_hat.grad = None
    shallow = MaskedFaceAlignmentLoss(regions=("eyes", "lips"), layers=("relu1_2",), feature_extractor=vgg_shallow)
    shallow(x_hat, x, masks)[0].backward()
    support = F.max_pool2d(masks.amax(1, keepdim=True), 5, stride=1, padding=2)[0, 0] > 0
    grad = x_hat.grad.abs().sum(1)[0]
    assert grad[~support].sum() == 0 and (grad[masks[0, 0] > 0] > 0).float().mean() > 0.9


def test_region_weights_scale_their_terms(face, vgg):
    x, masks = face["x"], _masks(face["lm"])
    x_hat = _noisy(x)
    base_fn = MaskedFaceAlignmentLoss(feature_extractor=vgg, use_references=False)
    loss1, t1 = base_fn(x_hat, x, masks)
    assert base_fn.region_weights == [1.0, 0.5, 0.5, 1.0, 0.5]  # eyes, brows, nose, lips, skin
    expected = sum(w * t1[f"feature/{r}"] for r, w in zip(DEFAULT_REGIONS, base_fn.region_weights))
    torch.testing.assert_close(t1["feature"], expected)
    loss3, t3 = MaskedFaceAlignmentLoss(feature_extractor=vgg, region_weights={"eyes": 3.0})(x_hat, x, masks)
    for key in ("feature", "texture"):
        torch.testing.assert_close(t3[f"{key}/eyes"], t1[f"{key}/eyes"])  # per-region values are unweighted
        torch.testing.assert_close(t3[key] - t1[key], 2.0 * t1[f"{key}/eyes"])
    torch.testing.assert_close(loss3 - loss1, 2.0 * (t1["feature/eyes"] + t1["texture/eyes"]))
    only_lips = {r: 0.0 for r in DEFAULT_REGIONS} | {"lips": 1.0}
    loss_l, _ = MaskedFaceAlignmentLoss(feature_extractor=vgg, region_weights=only_lips, texture_weight=0.0)(
        x_hat, x, masks
    )
    torch.testing.assert_close(loss_l, t1["feature/lips"])


def test_empty_region_is_left_out_of_the_batch_mean(vgg_shallow):
    torch.manual_seed(6)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat = _noisy(x, seed=7)
    masks = torch.zeros(2, 2, 32, 32)
    masks[:, 0, 4:12, 4:28] = 1.0
    masks[0, 1, 18:26, 8:24] = 1.0  # sample 1 has no visible lips
    loss_fn = MaskedFaceAlignmentLoss(regions=("eyes", "lips"), layers=("relu1_2",), feature_extractor=vgg_shallow)
    _, both = loss_fn(x_hat, x, masks)
    _, first = loss_fn(x_hat[:1], x[:1], masks[:1])
    for key in ("feature/lips", "texture/lips"):
        torch.testing.assert_close(both[key], first[key])
    assert both["feature/eyes"] != first["feature/eyes"]


def test_reference_term_zero_without_valid_references(face, vgg):
    x, lm, masks = face["x"], face["lm"], _masks(face["lm"])
    x_hat = _noisy(x)
    loss_fn = MaskedFaceAlignmentLoss(feature_extractor=vgg)
    refs = face["ref"][:, None].repeat(1, 2, 1, 1, 1)  # (1, 2, 3, S, S)
    ref_lm = face["ref_lm"][:, None].repeat(1, 2, 1, 1)
    base, _ = loss_fn(x_hat, x, masks)
    cases = {
        "no refs": {},
        "K = 0": {"refs": refs[:, :0], "ref_landmarks": ref_lm[:, :0], "target_landmarks": lm},
        "all masked": {"refs": refs, "ref_landmarks": ref_lm, "target_landmarks": lm,
                       "ref_mask": torch.zeros(1, 2, dtype=torch.bool)},
    }
    for name, kwargs in cases.items():
        loss, terms = loss_fn(x_hat, x, masks, **kwargs)
        assert terms["reference"].item() == 0.0, name
        torch.testing.assert_close(loss, base, msg=name)
    off = MaskedFaceAlignmentLoss(feature_extractor=vgg, use_references=False)
    assert off(x_hat, x, masks, refs=refs, ref_landmarks=ref_lm, target_landmarks=lm)[1]["reference"] == 0.0
    with pytest.raises(ValueError, match="ref_landmarks"):
        loss_fn(x_hat, x, masks, refs=refs)


def test_reference_term_nonzero_and_differentiable(face, vgg):
    x, lm, masks = face["x"], face["lm"], _masks(face["lm"])
    x_hat = _noisy(x).requires_grad_()
    refs = torch.stack([face["ref"], torch.zeros_like(face["ref"])], 1)  # second slot: padding
    ref_lm = torch.stack([face["ref_lm"], torch.zeros_like(face["ref_lm"])], 1)
    ref_mask = torch.tensor([[True, False]])
    loss_fn = MaskedFaceAlignmentLoss(feature_extractor=vgg, feature_weight=0.0, texture_weight=0.0)
    loss, terms = loss_fn(x_hat, x, masks, refs=refs, ref_landmarks=ref_lm, ref_mask=ref_mask, target_landmarks=lm)
    assert terms["reference"] > 0
    torch.testing.assert_close(loss, 0.5 * terms["reference"])  # default reference_weight
    loss.backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    # the padded slot is ignored: same value as with the real reference alone
    alone = loss_fn(x_hat, x, masks, refs=refs[:, :1], ref_landmarks=ref_lm[:, :1], target_landmarks=lm)[1]
    torch.testing.assert_close(alone["reference"], terms["reference"])
    # per-region alignment and affine fits run too
    for align, transform in (("region", "similarity"), ("global", "affine")):
        fn = MaskedFaceAlignmentLoss(regions=("eyes", "lips"), feature_extractor=vgg, reference_align=align,
                                     reference_transform=transform)
        assert fn(x_hat, x, masks[:, [0, 3]], refs=refs, ref_landmarks=ref_lm, ref_mask=ref_mask,
                  target_landmarks=lm)[1]["reference"] > 0


def test_warp_brings_the_reference_onto_the_target(face, vgg):
    x, lm = face["x"], face["lm"]
    warped, valid = warp_to_target(face["ref"], face["ref_lm"], lm, (SIZE, SIZE))
    inside = valid[:, 0] > 0.999
    assert inside.float().mean() > 0.8
    err = (warped - x).abs().mean(1)[inside].mean()
    assert err < 0.5 * (face["ref"] - x).abs().mean(1)[inside].mean() and err < 0.12
    # a reference that IS the target (identity fit) has exactly the target's statistics
    regions = ("eyes", "brows", "skin")
    masks = _masks(lm, regions)
    for align in ("global", "region"):
        loss_fn = MaskedFaceAlignmentLoss(regions=regions, feature_extractor=vgg, reference_align=align)
        ref_stats = loss_fn.reference_statistics(x[:, None], lm[:, None], lm, masks)
        for (sr, count), (st, area) in zip(ref_stats, loss_fn.region_statistics(x, masks)):
            torch.testing.assert_close(sr, st, rtol=1e-5, atol=1e-6)
            assert torch.equal(count > 0, area > 1e-6)
        x_hat = _noisy(x)
        _, terms = loss_fn(x_hat, x, masks, refs=x[:, None], ref_landmarks=lm[:, None], target_landmarks=lm)
        torch.testing.assert_close(terms["reference"], terms["texture"], rtol=1e-4, atol=1e-7)


def test_build_region_masks_from_labels_and_landmarks(face):
    from scipy.spatial import Delaunay

    lm = face["lm"] * 4  # the astronaut's points on a 256 px crop: eyes about 25 x 12 px
    eyes = build_region_masks(landmarks=lm, size=(256, 256), regions=("eyes",))[0, 0].numpy() > 0.5  # (256, 256)
    yy, xx = np.mgrid[:256, :256]
    centres = np.stack([xx.ravel(), yy.ravel()], 1).astype(float)  # pixel centres at integer coordinates
    inside = np.zeros(256 * 256, bool)
    for eye in (range(36, 42), range(42, 48)):  # dlib 68: the two eye contours; the eyes region is their hulls
        inside |= Delaunay(lm[0, list(eye)].numpy()).find_simplex(centres) >= 0
    inside = inside.reshape(256, 256)
    assert (eyes & inside).sum() / (eyes | inside).sum() > EYE_IOU  # the same hulls, rasterised independently
    blurred = build_region_masks(landmarks=lm, size=(256, 256), regions=("eyes",), feather=2.0)[0, 0]
    assert 0 < blurred[~torch.from_numpy(eyes)].max() < 1 and blurred.max() <= 1  # feathering spreads the edges
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 8:12, 4:10] = 4  # bisenet l_eye
    labels[:, 8:12, 20:26] = 5  # r_eye
    labels[:, 14:20, 10:22] = 10  # nose
    masks = build_region_masks(labels=labels, regions=("eyes", "nose", "lips"))
    assert masks.shape == (2, 3, 32, 32) and masks[:, 0].sum() == 2 * 48 and masks[:, 1].sum() == 2 * 72
    assert masks[:, 2].sum() == 0
    up = build_region_masks(labels=labels, regions=("eyes",), size=(64, 64), feather=1.5)
    assert up.shape == (2, 1, 64, 64) and up.min() >= 0 and up.max() <= 1 and (up > 0).sum() > 4 * 2 * 48
    with pytest.raises(ValueError, match="labels.*landmarks"):
        build_region_masks(size=(SIZE, SIZE))
    with pytest.raises(ValueError, match="size"):
        build_region_masks(landmarks=lm)


def test_bad_arguments(face, vgg):
    with pytest.raises(ValueError, match="hair"):
        MaskedFaceAlignmentLoss(regions=("eyes", "hair"), feature_extractor=vgg)
    with pytest.raises(ValueError, match="nose"):
        MaskedFaceAlignmentLoss(regions=("eyes",), region_weights={"nose": 1.0}, feature_extractor=vgg)
    with pytest.raises(ValueError, match="pool9"):
        VGGFeatures(("relu1_2", "pool9"), random_init=True)
    loss_fn = MaskedFaceAlignmentLoss(feature_extractor=vgg)
    with pytest.raises(ValueError, match="masks must be"):
        loss_fn(face["x"], face["x"], torch.zeros(1, 3, SIZE, SIZE))
    with pytest.raises(KeyError, match="relu5_3"):
        MaskedFaceAlignmentLoss(layers=("relu5_3",), feature_extractor=vgg)(face["x"], face["x"], _masks(face["lm"]))


def test_vgg_weights_from_the_registry(weights_home, tmp_path):
    with pytest.raises(MissingWeightError, match="weights.vgg16_imagenet"):
        VGGFeatures()
    with pytest.raises(MissingWeightError, match="weights.vgg16_imagenet"):
        MaskedFaceAlignmentLoss()
    # a torchvision-layout checkpoint (features.<i>.*, plus a classifier we ignore) loads from an explicit path
    torch.manual_seed(5)
    src = VGGFeatures(("relu2_2",), random_init=True)
    state = {f"features.{k}": v for k, v in src.net.state_dict().items()} | {"classifier.0.bias": torch.zeros(4)}
    torch.save(state, tmp_path / "vgg16.pth")
    net = VGGFeatures(("relu1_2", "relu2_2"), weights=tmp_path / "vgg16.pth")
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), src.parameters()))
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    out = net(x)
    assert list(out) == ["relu1_2", "relu2_2"] and out["relu2_2"].shape == (1, 128, 8, 8)
    net.train()
    assert not net.training
