"""Metric functions: ALD / LMD, identity (IDS, Deg., reference honesty), PSNR / SSIM and IQA availability."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from honestface.data import samples
from honestface.metrics.landmark import (
    DLIB68_MEAN_SHAPE,
    LandmarkMetrics,
    affine_landmark_distance,
    landmark_distance,
    landmark_scores,
)

EYES = np.arange(36, 48)


def _face512() -> np.ndarray:
    """A frontal dlib68 shape the size of a face in a 512 px aligned crop."""
    return DLIB68_MEAN_SHAPE * 1.2 + np.array([256.0, 280.0])


def _similarity(points: np.ndarray, scale: float, degrees: float, shift) -> np.ndarray:
    a = np.deg2rad(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ (scale * rot).T + np.asarray(shift, float)


@pytest.fixture(scope="module")
def landmark_metrics() -> LandmarkMetrics:
    return LandmarkMetrics("dlib68", "dlib")


# ------------------------------------------------------------------------------------------------ ALD / LMD

def test_ald_zero_for_identical_landmarks():
    g = _face512()
    for comp in ("all", "eyes", "mouth"):
        assert affine_landmark_distance(g, g.copy(), "dlib68", comp) == 0.0
    assert landmark_distance(g, g) == 0.0


def test_ald_invariant_to_joint_similarity_while_lmd_scales():
    rng = np.random.default_rng(0)
    g = _face512()
    r = g + rng.normal(0, 1.5, g.shape)
    before = landmark_scores(r, g)
    g2, r2 = (_similarity(p, 1.7, 25.0, (40, -13)) for p in (g, r))
    after = landmark_scores(r2, g2)
    for key in ("ald", "ald_e", "ald_m"):
        assert before[key] > 0
        assert after[key] == pytest.approx(before[key], rel=1e-9)
    assert after["lmd"] == pytest.approx(1.7 * before["lmd"], rel=1e-9)


def test_ald_sees_eye_shape_change_that_lmd_barely_registers():
    g = _face512()
    r = g.copy()
    for eye in (np.arange(36, 42), np.arange(42, 48)):  # squash each eye vertically by 2 px around its centre
        cy = g[eye, 1].mean()
        r[eye, 1] = g[eye, 1] - np.clip(g[eye, 1] - cy, -2.0, 2.0)
    squash = landmark_scores(r, g)
    assert squash["lmd"] < 0.5  # 12 of 68 points moved by <= 2 px
    assert squash["ald_e"] > 2.0 and squash["ald_e"] > 8 * squash["lmd"]
    assert squash["ald_m"] == pytest.approx(0.0, abs=1e-9)  # the mouth did not change


def test_ald_without_builtin_template_uses_normalised_gt_frame():
    rng = np.random.default_rng(1)
    g = rng.uniform(100, 400, (98, 2))  # wflw98 has no built-in mean shape
    r = g + rng.normal(0, 1.0, g.shape)
    base = affine_landmark_distance(r, g, "wflw98", "eyes")
    moved = affine_landmark_distance(*(_similarity(p, 0.5, -40.0, (3, 7)) for p in (r, g)), "wflw98", "eyes")
    assert base > 0 and moved == pytest.approx(base, rel=1e-9)
    # a user template overrides the default and is accepted per scheme or per component
    own = affine_landmark_distance(r, g, "wflw98", "eyes", template=g)
    assert own == pytest.approx(base, rel=1e-9)  # the GT itself as template is the default frame
    with pytest.raises(ValueError, match="template has 5 points"):
        affine_landmark_distance(r, g, "wflw98", "eyes", template=g[:5])


def test_landmark_metrics_on_real_photos(landmark_metrics):
    for image in (samples.astronaut(), samples.grace_hopper()):
        same = landmark_metrics(image, image.copy())
        assert same == {"lmd": 0.0, "ald": 0.0, "ald_e": 0.0, "ald_m": 0.0}
        h, w = image.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 1.5, 1.02)
        warped = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out = landmark_metrics(warped, image)
        assert set(out) == {"lmd", "ald", "ald_e", "ald_m"}
        assert 0 < out["lmd"] < 15 and all(0 < out[k] < 60 for k in ("ald", "ald_e", "ald_m"))


def test_landmark_detection_failure_is_reported(landmark_metrics):
    grey = np.full((256, 256, 3), 128, np.uint8)
    assert landmark_metrics.landmarks(grey) is None
    assert "no face" in landmark_metrics.last_failure
    out = landmark_metrics(grey, grey)
    assert set(out) == {"failed"} and "no face detected" in out["failed"]
    # a failed restoration still gets numbers: the GT's box is used for both images
    face = samples.astronaut()
    bad = landmark_metrics(np.full_like(face, 128), face)
    assert "failed" not in bad and bad["lmd"] > 0


# ------------------------------------------------------------------------------------------------ identity

@pytest.fixture(scope="module")
def group_faces() -> list[np.ndarray]:
    from honestface.face import build_detector, extract_faces

    faces = extract_faces(samples.group_t1(), build_detector("dlib"), size=256)
    assert len(faces) >= 4
    return [f.crop for f in faces]


def test_identity_ranks_own_jittered_copy_above_other_people(group_faces):
    from honestface.data.views import augmented_views
    from honestface.metrics.identity import IdentityMetrics

    ids = IdentityMetrics(backend="dlib", same_face=False)
    assert ids.name == "dlib"
    for k in range(2):
        anchor = group_faces[k]
        jittered = augmented_views(anchor, 1, seed=3 + k, flip=False)[0]
        own = ids(jittered, anchor)
        others = [ids(f, anchor)["ids"] for i, f in enumerate(group_faces) if i != k]
        assert own["ids"] > max(others)
        assert own["deg"] == pytest.approx(np.degrees(np.arccos(own["ids"])), abs=1e-6)
    assert ids(group_faces[0], group_faces[0])["ids"] == pytest.approx(1.0, abs=1e-5)


def test_identity_failure_auto_backend_and_reference_honesty(group_faces, weights_home):
    from honestface.metrics.identity import IdentityMetrics

    metric = IdentityMetrics(backend="auto")  # empty HONESTFACE_HOME: falls back to the bundled dlib
    assert metric.name == "dlib" and "arcface_w600k_r50" in metric.skipped["arcface_onnx"]
    grey = np.full((256, 256, 3), 128, np.uint8)
    assert "no face detected" in metric(group_faces[0], grey)["failed"]
    # the output is person 0, the input a blurred person-0 face; references: person 0 itself
    lq = cv2.resize(cv2.resize(group_faces[0], (32, 32), interpolation=cv2.INTER_AREA), (256, 256))
    res = metric.reference_honesty(group_faces[0], lq, [group_faces[0], grey])
    assert res["out_ref_ids"] == pytest.approx(1.0, abs=1e-5) and res["gain"] >= 0
    assert res["num_refs"] == 1 and res["ref_failed"] == 1
    assert "references" in metric.reference_honesty(group_faces[0], lq, [grey])["failed"]


# ------------------------------------------------------------------------------------------------ IQA

@pytest.fixture(scope="module")
def image_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two real uint8 images: grace_hopper at 256 px and a noisy, blurred copy."""
    gt = cv2.resize(samples.grace_hopper(), (256, 300), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    noisy = cv2.GaussianBlur(gt, (5, 5), 1.0).astype(np.float64) + rng.normal(0, 6, gt.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), gt


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255.0  # (1, 3, H, W) in [0, 1]


def test_psnr_ssim_agree_with_pyiqa_and_skimage(image_pair):
    import pyiqa
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from honestface.metrics.iqa import IQAMetrics

    out_u8, gt_u8 = image_pair
    out, gt = _t(out_u8), _t(gt_u8)
    ours = IQAMetrics(["psnr", "psnr_y", "ssim", "ssim_rgb", "ssim_y"])(out, gt)
    assert all(v.shape == (1,) for v in ours.values())
    sk_kw = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
    # psnr: RGB, data range 1 (pyiqa, skimage); ssim: pyiqa's default, the SSIM of the rounded YIQ luma
    assert ours["psnr"].item() == pytest.approx(peak_signal_noise_ratio(gt_u8 / 255.0, out_u8 / 255.0, data_range=1),
                                                abs=1e-4)
    assert ours["psnr"].item() == pytest.approx(pyiqa.create_metric("psnr", device="cpu")(out, gt).item(), abs=1e-4)
    assert ours["ssim"].item() == pytest.approx(pyiqa.create_metric("ssim", device="cpu")(out, gt).item(), abs=1e-4)
    luma = [np.rint(a.astype(np.float64) @ [0.299, 0.587, 0.114]) for a in (gt_u8, out_u8)]
    assert ours["ssim"].item() == pytest.approx(structural_similarity(*luma, **sk_kw), abs=1e-3)  # minus the clamp
    # ssim_rgb: the RGB-average SSIM on the 0-255 scale (skimage, pyiqa ssimc on uint8 images)
    ssim_sk = structural_similarity(gt_u8.astype(np.float64), out_u8.astype(np.float64), channel_axis=2, **sk_kw)
    assert ours["ssim_rgb"].item() == pytest.approx(ssim_sk, abs=1e-4)
    assert ours["ssim_rgb"].item() == pytest.approx(pyiqa.create_metric("ssimc", device="cpu")(out, gt).item(),
                                                    abs=1e-4)
    # Y: BT.601 luma in [16, 235], peak 255 (BasicSR = skimage rgb2ycbcr = pyiqa psnry with color_space="ycbcr")
    from skimage.color import rgb2ycbcr

    y_gt, y_out = rgb2ycbcr(gt_u8)[..., 0], rgb2ycbcr(out_u8)[..., 0]
    assert ours["psnr_y"].item() == pytest.approx(peak_signal_noise_ratio(y_gt, y_out, data_range=255), abs=1e-4)
    assert ours["ssim_y"].item() == pytest.approx(structural_similarity(y_gt, y_out, **sk_kw), abs=1e-4)
    psnry = pyiqa.create_metric("psnry", device="cpu", color_space="ycbcr")(out, gt).item()
    assert ours["psnr_y"].item() == pytest.approx(psnry, abs=1e-4)
    same = IQAMetrics(["ssim", "psnr", "psnr_y"])(gt.repeat(2, 1, 1, 1), gt.repeat(2, 1, 1, 1))
    assert torch.allclose(same["ssim"], torch.ones(2)) and torch.allclose(same["psnr"], torch.full((2,), 80.0))
    assert torch.isinf(same["psnr_y"]).all()  # BasicSR: inf; pyiqa's psnr: 10 log10(1 / 1e-8) = 80 dB


def test_missing_weights_are_reported_with_the_registry_key(weights_home, image_pair):
    from honestface.metrics.iqa import IQAMetrics, available_metrics
    from honestface.weights import MissingWeightError

    avail = available_metrics()
    assert avail["psnr"] is None and avail["ssim_y"] is None
    assert "musiq_koniq" in avail["musiq"] and "weights.musiq_koniq" in avail["musiq"]
    assert "vgg16_imagenet" in avail["dists"] and "fid_inception" in avail["fid"]
    with pytest.raises(MissingWeightError, match="musiq_koniq"):
        IQAMetrics(["musiq"])
    metrics = IQAMetrics(["psnr", "musiq", "lpips_vgg"], strict=False)
    assert metrics.names == ["psnr"] and set(metrics.unavailable) == {"musiq", "lpips_vgg"}
    assert set(metrics(_t(image_pair[0]), _t(image_pair[1]))) == {"psnr"}
    with pytest.raises(ValueError, match="need a gt"):
        metrics(_t(image_pair[0]))
    with pytest.raises(ValueError, match="unknown IQA metric 'psnr_rgb'"):
        IQAMetrics(["psnr_rgb"])


def test_torchscript_reader_and_fid_statistics(tmp_path):
    from honestface.metrics.iqa import load_fid_statistics, read_torchscript_tensors

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.warns(FutureWarning):  # torch.jit.trace is deprecated; OpenAI's CLIP files are such archives
        torch.jit.trace(net.eval(), torch.zeros(1, 3, 8, 8)).save(str(tmp_path / "net.pt"))
    state = read_torchscript_tensors(tmp_path / "net.pt")
    assert set(state) == set(net.state_dict())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())

    rng = np.random.default_rng(0)
    mu, cov = rng.normal(size=4), np.eye(4)
    torch.save({"mean": mu, "cov": cov}, tmp_path / "stats.pth")  # BasicSR layout
    np.savez(tmp_path / "stats.npz", mu=mu, sigma=cov)  # clean-fid / pytorch-fid layout
    for name in ("stats.pth", "stats.npz"):
        m, c = load_fid_statistics(tmp_path / name)
        assert np.array_equal(m, mu) and np.array_equal(c, cov)
