"""VQFR's published LMD (honestface.metrics.published_landmark).

The real AWing weights cannot be had offline, so the FAN gets a random state dict (saved as {'state_dict': ...} and
loaded through the registry path). The metric is compared with (a) facexlib's FAN fed by a reference of VQFR's
preprocessing and point extraction written out below from TencentARC/VQFR:vqfr/archs/awing_arch.py, and (b) the
upstream code itself (facexlib's `get_landmarks` / `calculate_points`, which are VQFR's line for line, run with
the `np.float` alias numpy 2 removed). Preprocessing is checked with an input-dependent stand-in forward on real
photos.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from honestface.data import samples
from honestface.metrics.published_landmark import LMD_INFO, VQFRLandmarkDistance, vqfr_heatmap_points
from honestface.weights import WeightsError


def _write(path, rgb):
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """astronaut 512x512 and grace_hopper 600 (H) x 512 (W), written as PNG."""
    d = tmp_path_factory.mktemp("lmd_photos")
    return {"astronaut": _write(d / "astronaut.png", samples.astronaut()),
            "grace": _write(d / "grace.png", samples.grace_hopper())}


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    from facexlib.alignment.awing_arch import FAN

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lmd_weights") / "alignment_WFLW_4HG.pth"
    torch.save({"state_dict": FAN(num_modules=4, num_landmarks=98, device="cpu").state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def metric(random_weights):
    return VQFRLandmarkDistance(weights={"awing_fan": random_weights})


# ------------------------------------------------------------------------------------------ reference (VQFR)

def reference_input(path, interpolation=cv2.INTER_LINEAR, rgb=True, scale=255.0):
    """VQFR get_landmarks' preprocessing: imread (BGR) -> resize (256, 256) -> [..., ::-1] -> float -> /255."""
    img = cv2.imread(str(path))
    small = cv2.resize(img, (256, 256), interpolation=interpolation)
    inp = small[..., ::-1] if rgb else small
    t = torch.from_numpy(np.ascontiguousarray(inp.transpose((2, 0, 1)))).float()
    return t.div_(scale).unsqueeze_(0), img.shape[:2]  # (1, 3, 256, 256), (H, W)


def reference_points(heat):
    """VQFR calculate_points for one image, one landmark at a time. heat: (98, 64, 64) -> (98, 2) cells."""
    n = heat.shape[0]
    line = heat.reshape(n, 4096)
    idx = [int(np.argmax(line[k])) for k in range(n)]
    any_last_row = any(i + 64 >= 4096 for i in idx)
    any_first = any(i - 64 <= 0 for i in idx)
    out = np.zeros((n, 2))
    for k, i in enumerate(idx):
        x_up = line[k, i + 1] if i + 1 < 4096 else line[k, 0]  # script: IndexError there; ours wraps
        x_down = line[k, i - 1]
        y_up = line[k, 4095] if any_last_row else line[k, i + 64]
        y_down = line[k, 0] if any_first else line[k, i - 64]
        out[k, 0] = i % 64 + 0.25 * np.sign(x_up - x_down) + 0.5
        out[k, 1] = i // 64 + 0.25 * np.sign(y_up - y_down) + 0.5
    return out


def reference_landmarks(heat, size, swap_scale=False):
    h, w = size
    sx, sy = (h / 64, w / 64) if swap_scale else (w / 64, h / 64)
    return reference_points(heat) * np.array([sx, sy])


def _np_float_alias(monkeypatch):
    monkeypatch.setattr(np, "float", float, raising=False)  # upstream calculate_points uses the removed alias


# ------------------------------------------------------------------------------------------ network path

def test_landmarks_and_batch_match_reference_with_random_weights(metric, random_weights, photos):
    from facexlib.alignment.awing_arch import FAN

    ref_net = FAN(num_modules=4, num_landmarks=98, device="cpu")
    ref_net.load_state_dict(torch.load(random_weights, weights_only=True)["state_dict"], strict=True)
    ref_net.eval()
    paths = [photos["grace"], photos["astronaut"]]
    batched = metric.landmarks_batch(paths)  # one forward of both images, decoded one by one
    assert len(batched) == 2
    for path, from_batch in zip(paths, batched):
        x, size = reference_input(path)
        with torch.no_grad():
            heat = ref_net(x)[0][-1][0, :-1].numpy()  # (98, 64, 64)
        expected = reference_landmarks(heat, size)
        got = metric.landmarks(path)
        assert got.shape == (98, 2) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(from_batch, expected, rtol=0, atol=1e-5)


def _hide_last_cell(net, monkeypatch):
    """Same fixed edit on both nets: the last heatmap cell becomes each map's minimum - 1, so no peak sits
    there (the upstream code raises IndexError for such a peak)."""
    original = net.forward

    def forward(x):
        outs, bounds = original(x)
        last = outs[-1].clone()
        last[..., -1, -1] = last.flatten(2).amin(2) - 1.0
        return outs[:-1] + [last], bounds

    monkeypatch.setattr(net, "forward", forward)


def test_landmarks_match_upstream_get_landmarks(metric, random_weights, photos, monkeypatch):
    from facexlib.alignment.awing_arch import FAN

    _np_float_alias(monkeypatch)
    upstream = FAN(num_modules=4, num_landmarks=98, device="cpu")
    upstream.load_state_dict(torch.load(random_weights, weights_only=True)["state_dict"], strict=True)
    upstream.eval()
    _hide_last_cell(upstream, monkeypatch)
    _hide_last_cell(metric.net, monkeypatch)
    path = photos["grace"]  # non-square: W/64 and H/64 differ
    with torch.no_grad():
        expected = upstream.get_landmarks(cv2.imread(str(path)))
    np.testing.assert_allclose(metric.landmarks(path), expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------ decoding

def _heatmaps_with_peaks(peaks, seed=0):
    rng = np.random.default_rng(seed)
    heat = rng.normal(0.0, 0.1, (98, 64, 64)).astype(np.float32)
    for k, (x, y) in enumerate(peaks):
        heat[k, y, x] = 5.0 + k * 0.01
    return heat


def test_decoding_equals_upstream_calculate_points(monkeypatch):
    from facexlib.alignment.awing_arch import calculate_points

    from honestface.face.landmarks import decode_heatmaps

    _np_float_alias(monkeypatch)
    rng = np.random.default_rng(1)
    interior = [(int(a), int(b)) for a, b in rng.integers(2, 62, (98, 2))]
    # borders: cell 0 (reads the last cell as x neighbour), first row, last row, left and right columns
    border = [(0, 0), (5, 0), (63, 10), (0, 20), (30, 63), (1, 1)] + interior[6:]
    for peaks in (interior, border):
        heat = _heatmaps_with_peaks(peaks)
        expected = calculate_points(heat[None]).reshape(-1, 2)
        np.testing.assert_array_equal(vqfr_heatmap_points(heat), expected)
        np.testing.assert_array_equal(vqfr_heatmap_points(heat), reference_points(heat))
    # with border peaks the script's y-neighbour switch moves interior points too: not a clean 2D decoding
    assert not np.array_equal(vqfr_heatmap_points(heat), decode_heatmaps(heat[None])[0])

    corner = _heatmaps_with_peaks([(63, 63)] + interior[1:])
    with pytest.raises(IndexError):
        calculate_points(corner[None])
    line = corner[0].reshape(-1)
    ours = vqfr_heatmap_points(corner)[0]
    assert ours[0] == 63 + 0.25 * np.sign(line[0] - line[4094]) + 0.5  # next cell wraps to cell 0
    assert ours[1] == 63 + 0.25 * np.sign(line[4095] - line[0]) + 0.5  # image-wide switches


# ------------------------------------------------------------------------------------------ preprocessing

_TARGETS = torch.linspace(0.15, 0.85, 99)


def input_heatmaps(x):
    """Stand-in forward: heatmap k peaks where 4x4-pooled colour channel k % 3 is closest to a target level.
    x: (B, 3, 256, 256) -> (B, 99, 64, 64)."""
    pooled = F.avg_pool2d(x, 4)  # (B, 3, 64, 64)
    chans = pooled[:, [k % 3 for k in range(99)]]  # (B, 99, 64, 64)
    return -(chans - _TARGETS.view(1, 99, 1, 1)).abs()


def test_preprocessing_on_real_photos(metric, photos, monkeypatch):
    seen = []

    def forward(x):
        seen.append(x.clone())
        return [input_heatmaps(x)], None

    monkeypatch.setattr(metric.net, "forward", forward)
    for name, path in photos.items():
        seen.clear()
        got = metric.landmarks(path)
        x, size = reference_input(path)
        assert torch.equal(seen[0], x) and float(seen[0].max()) <= 1.0
        expected = reference_landmarks(input_heatmaps(x)[0, :-1].numpy(), size)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)

        wrong = {"BGR order": reference_input(path, rgb=False)[0], "no /255": reference_input(path, scale=1.0)[0],
                 "nearest resize": reference_input(path, interpolation=cv2.INTER_NEAREST)[0],
                 "cubic resize": reference_input(path, interpolation=cv2.INTER_CUBIC)[0]}
        if name == "grace":  # 600 -> 256 is not an exact halving: area differs from bilinear only here
            wrong["area resize"] = reference_input(path, interpolation=cv2.INTER_AREA)[0]
            wrong_scale = reference_landmarks(input_heatmaps(x)[0, :-1].numpy(), size, swap_scale=True)
            assert np.abs(got - wrong_scale).max() > 1.0, "W/64 and H/64 swapped"
        for what, xw in wrong.items():
            assert not torch.equal(seen[0], xw), what
            moved = reference_landmarks(input_heatmaps(xw)[0, :-1].numpy(), size)
            assert np.abs(got - moved).max() > 1.0, what

    seen.clear()
    batched = metric.landmarks_batch(list(photos.values()))
    assert seen[0].shape == (2, 3, 256, 256)
    for path, pts in zip(photos.values(), batched):
        x, size = reference_input(path)
        np.testing.assert_allclose(pts, reference_landmarks(input_heatmaps(x)[0, :-1].numpy(), size), atol=1e-9)


# ------------------------------------------------------------------------------------------ pairs and average

def test_identical_images_give_zero(metric, photos, tmp_path):
    gt = _write(tmp_path / "gt_grace.png", samples.grace_hopper())
    values = metric.pair_values([photos["grace"]], [gt])
    np.testing.assert_array_equal(values, [0.0])
    assert metric.aggregate(values, num_gt=1) == {"value": 0.0}


def test_known_shift_and_pairing_by_sorted_name(metric, monkeypatch):
    base = np.random.default_rng(0).uniform(0, 512, (98, 2))
    shift = np.zeros((98, 2))
    shift[:49] = (3.0, 4.0)  # half the points 5 px away: LMD 2.5
    points = {"gt/a.png": base, "gt/b.png": base + 10.0, "res/a.png": base + shift, "res/b.png": base + 10.0 + 2 * shift}
    monkeypatch.setattr(metric, "landmarks_batch", lambda paths: [points[str(p)] for p in paths])
    values = metric.pair_values(["res/a.png", "res/b.png"], ["gt/b.png", "gt/a.png"])  # a <-> a, b <-> b
    np.testing.assert_allclose(values, [2.5, 5.0], rtol=0, atol=1e-12)
    values = metric.pair_values(["res/b.png", "res/a.png"], ["gt/a.png", "gt/b.png"])  # values follow `restored`
    np.testing.assert_allclose(values, [5.0, 2.5], rtol=0, atol=1e-12)
    assert metric.aggregate(values, num_gt=2)["value"] == pytest.approx(3.75, abs=1e-12)
    assert metric.pair_values([], []).shape == (0,)
    with pytest.raises(ValueError, match="same length"):
        metric.pair_values(["res/a.png"], ["gt/a.png", "gt/b.png"])
    with pytest.raises(ValueError):
        metric.aggregate(np.zeros(0), num_gt=0)
    with pytest.raises(ValueError):
        metric.aggregate(np.ones(3), num_gt=2)


# ------------------------------------------------------------------------------------------ weights

def test_missing_weight_names_config_key(weights_home, tmp_path):
    with pytest.raises(WeightsError) as err:
        VQFRLandmarkDistance()
    msg = str(err.value)
    assert "weights.awing_fan" in msg and "alignment_WFLW_4HG.pth" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="weights.awing_fan"):
        VQFRLandmarkDistance(weights={"awing_fan": tmp_path / "nowhere.pth"})


def test_wrong_state_dict_is_refused(tmp_path):
    from facexlib.alignment.awing_arch import FAN

    path = tmp_path / "fan68.pth"
    torch.save({"state_dict": FAN(num_modules=1, num_landmarks=68, device="cpu").state_dict()}, path)
    with pytest.raises(WeightsError, match="does not match"):
        VQFRLandmarkDistance(weights={"awing_fan": path})
    assert LMD_INFO["weights"] == ("awing_fan",) and LMD_INFO["higher_is_better"] is False
