"""Published identity protocols (VQFR Deg., DAEFR IDD, ReF-LDM IDS) against references written from their scripts.

The references below are written out here from the published sources (ronghuaiyang/arcface-pytorch
models/resnet.py, GFPGAN ResNetArcFace, VQFR metric_paper/calculate_cos_dist.py, DAEFR
scripts/metrics/cal_identity_distance.py, ReF-LDM scripts/eval.py + identity_loss.py), without importing the
network or preprocessing code under test. Real weights cannot be had offline: random weights in the released
files' layout go through both paths.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from honestface.data import samples
from honestface.metrics.published_identity import (
    PUBLISHED_IDENTITY,
    build_published_identity,
    deg_read,
    idd_read,
    refldm_read,
)
from honestface.weights import WeightsError

# ------------------------------------------------------------------------------- the published architecture


def _bn(name: str, c: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.weight", (c,)), (f"{name}.bias", (c,)), (f"{name}.running_mean", (c,)),
            (f"{name}.running_var", (c,)), (f"{name}.num_batches_tracked", ())]


def published_resnet_face18_keys() -> list[tuple[str, tuple[int, ...]]]:
    """State-dict rows of ResNetFace(IRBlock, [2, 2, 2, 2], use_se=False), in registration order."""
    rows = [("conv1.weight", (64, 1, 3, 3)), *_bn("bn1", 64), ("prelu.weight", (1,))]
    inplanes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            cin = inplanes if b == 0 else planes
            stride = 2 if (stage > 1 and b == 0) else 1
            p = f"layer{stage}.{b}."
            rows += [*_bn(p + "bn0", cin), (p + "conv1.weight", (cin, cin, 3, 3)), *_bn(p + "bn1", cin),
                     (p + "prelu.weight", (1,)), (p + "conv2.weight", (planes, cin, 3, 3)), *_bn(p + "bn2", planes)]
            if stride != 1 or cin != planes:
                rows += [(p + "downsample.0.weight", (planes, cin, 1, 1)), *_bn(p + "downsample.1", planes)]
        inplanes = planes
    rows += [*_bn("bn4", 512), ("fc5.weight", (512, 512 * 8 * 8)), ("fc5.bias", (512,)), *_bn("bn5", 512)]
    return rows


def random_state(seed: int = 0) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in published_resnet_face18_keys():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("prelu.weight"):
            state[key] = torch.rand(shape, generator=g) * 0.2 + 0.1
        elif len(shape) > 1:  # conv / linear weights, fan-in scaled
            state[key] = torch.randn(shape, generator=g) / math.sqrt(np.prod(shape[1:]))
        elif key.endswith(".weight"):
            state[key] = torch.rand(shape, generator=g) * 0.5 + 0.75
        else:  # biases, running means
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def reference_forward(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """resnet_face18(use_se=False) forward in eval mode, functional, from models/resnet.py. (B,1,128,128)->(B,512)"""
    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    x = F.max_pool2d(F.prelu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), "bn1"), sd["prelu.weight"]), 2, 2)
    for stage in range(1, 5):
        for b in range(2):
            p = f"layer{stage}.{b}"
            stride = 2 if (stage > 1 and b == 0) else 1
            a = sd[p + ".prelu.weight"]
            out = F.prelu(bn(F.conv2d(bn(x, p + ".bn0"), sd[p + ".conv1.weight"], padding=1), p + ".bn1"), a)
            out = bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=stride, padding=1), p + ".bn2")
            res = x
            if p + ".downsample.0.weight" in sd:
                res = bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), p + ".downsample.1")
            x = F.prelu(out + res, a)
    x = bn(x, "bn4").flatten(1)  # dropout is the identity in eval mode
    return bn(F.linear(x, sd["fc5.weight"], sd["fc5.bias"]), "bn5")


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def state() -> OrderedDict:
    return random_state()


@pytest.fixture(scope="module")
def arcface_files(tmp_path_factory, state) -> dict[str, Path]:
    """resnet18_110.pth-like (DataParallel `module.` keys) and arcface_resnet18.pth-like (plain keys) files."""
    folder = tmp_path_factory.mktemp("arcface18")
    files = {"module": folder / "resnet18_110.pth", "plain": folder / "arcface_resnet18.pth"}
    torch.save(OrderedDict(("module." + k, v) for k, v in state.items()), files["module"])
    torch.save(state, files["plain"])
    return files


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """astronaut (512x512) and grace_hopper (600x512) as PNG and JPEG files, plus a slightly changed astronaut."""
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name, rgb in (("astronaut", samples.astronaut()), ("grace", samples.grace_hopper())):
        out[f"{name}_png"] = folder / f"{name}.png"
        Image.fromarray(rgb).save(out[f"{name}_png"])
        out[f"{name}_jpg"] = folder / f"{name}.jpg"
        Image.fromarray(rgb).save(out[f"{name}_jpg"], quality=90)
    near = samples.astronaut().astype(np.int16)
    near[200:260, 200:260] += 6  # a small local change: a pair a fraction of a degree apart
    out["near_png"] = folder / "near" / "astronaut.png"
    out["near_png"].parent.mkdir()
    Image.fromarray(np.clip(near, 0, 255).astype(np.uint8)).save(out["near_png"])
    return out


def bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel bilinear resize without antialiasing (cv2 INTER_LINEAR / F.interpolate align_corners=False)."""
    def axis(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, wy = axis(img.shape[0], out_h)
    x0, x1, wx = axis(img.shape[1], out_w)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def _pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64)


# --------------------------------------------------------------------------------------- keys and loading

def test_network_state_dict_is_the_published_layout():
    from honestface.face.resnet_face import ResNetFace18

    ours = [(k, tuple(v.shape)) for k, v in ResNetFace18().state_dict().items()]
    assert ours == published_resnet_face18_keys()
    table = dict(ours)
    assert len(table) == 181  # 30 BatchNorms x 5, 20 convs, prelu x 9, fc5 x 2
    assert table["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert "layer1.0.downsample.0.weight" not in table  # stage 1 keeps 64 channels at stride 1
    assert table["fc5.weight"] == (512, 32768) and table["layer4.1.prelu.weight"] == (1,)


@pytest.mark.parametrize("layout", ["module", "plain"])
def test_released_layouts_load_strictly_and_forward_matches_reference(layout, arcface_files, state, photos):
    from honestface.face.resnet_face import load_resnet_face18

    net = load_resnet_face18(arcface_files[layout])
    x = torch.from_numpy(np.stack([deg_read(photos["astronaut_png"]), deg_read(photos["grace_png"])]))
    with torch.no_grad():
        ours, ref = net(x), reference_forward(state, x)
    assert ours.shape == (2, 512)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert not net.training


def test_file_without_batch_counters_loads_but_a_wrong_key_does_not(tmp_path, state):
    from honestface.face.resnet_face import load_resnet_face18

    old = tmp_path / "pre_0_4_1.pth"  # PyTorch 0.4.0 state dicts have no num_batches_tracked
    torch.save({"module." + k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, old)
    net = load_resnet_face18(old)
    torch.testing.assert_close(net.state_dict()["fc5.weight"], state["fc5.weight"])

    bad = tmp_path / "se.pth"
    torch.save({**state, "layer1.0.se.fc.0.weight": torch.zeros(4, 64)}, bad)
    with pytest.raises(ValueError, match="unexpected keys: layer1.0.se.fc.0.weight"):
        load_resnet_face18(bad)


class _Smuggled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.makedirs, (str(self.marker),)  # would create a folder if the file were unpickled freely


def test_pickled_object_is_refused_without_running_it(tmp_path, state):
    from honestface.face.resnet_face import load_resnet_face18

    marker = tmp_path / "code_ran"
    path = tmp_path / "smuggled.pth"
    torch.save({**{"module." + k: v for k, v in state.items()}, "extra": _Smuggled(marker)}, path)
    with pytest.raises(WeightsError):
        load_resnet_face18(path)
    assert not marker.exists()


def test_missing_weight_names_file_and_config_key(weights_home):
    with pytest.raises(WeightsError, match="weights.deg_arcface_resnet18"):
        build_published_identity("deg")
    with pytest.raises(ValueError, match="unknown published identity metric"):
        build_published_identity("lmd")


def test_metric_table():
    assert set(PUBLISHED_IDENTITY) == {"deg", "idd", "ids_refldm"}
    deg, idd, ids = (PUBLISHED_IDENTITY[k] for k in ("deg", "idd", "ids_refldm"))
    assert (deg.unit, deg.higher_is_better, deg.weights) == ("degrees", False, ("deg_arcface_resnet18",))
    assert (idd.unit, idd.higher_is_better, idd.weights) == ("radians", False, ("ida_arcface_resnet18",))
    assert (ids.unit, ids.higher_is_better, ids.weights) == ("cosine", True, ("arcface_w600k_r50",))
    assert deg.source == "TencentARC/VQFR:metric_paper/calculate_cos_dist.py"
    assert idd.source == "LIAGM/DAEFR:scripts/metrics/cal_identity_distance.py"
    assert ids.source == "ChiWeiHsiao/ref-ldm:scripts/eval.py"


# ----------------------------------------------------------------------------------------------- Deg. (VQFR)

def test_deg_reading_png_is_luma_bilinear_128(photos):
    for name in ("astronaut_png", "grace_png"):
        rgb = _pil_rgb(photos[name])
        gray = rgb @ np.array([0.299, 0.587, 0.114])  # R, G, B weights of OpenCV's gray
        ref = (bilinear(gray, 128, 128) - 127.5) / 127.5
        ours = deg_read(photos[name])
        assert ours.shape == (1, 128, 128) and ours.dtype == np.float32
        assert np.abs(ours[0] - ref).max() <= 2 / 127.5  # +-1 level of gray rounding and of fixed-point resize


def test_deg_reading_jpeg_uses_the_files_gray_read(photos):
    for name in ("astronaut_jpg", "grace_jpg"):
        gray = cv2.imread(str(photos[name]), cv2.IMREAD_GRAYSCALE).astype(np.float64)  # the script's read
        ref = (bilinear(gray, 128, 128) - 127.5) / 127.5
        assert np.abs(deg_read(photos[name])[0] - ref).max() <= 1 / 127.5


def test_deg_pair_values_and_one_degree_rule(tmp_path, arcface_files, state, photos):
    metric = build_published_identity("deg", weights={"deg_arcface_resnet18": arcface_files["module"]})
    restored = [photos["near_png"], photos["grace_png"], photos["grace_jpg"]]
    gt = [photos["astronaut_png"]] * 3
    values = metric.pair_values(restored, gt)

    expected = []
    for r, g in zip(restored, gt):  # the script: gray read, resize, normalise, batch [gt, restored], numpy angle
        batch = []
        for p in (g, r):
            img = cv2.resize(cv2.imread(str(p), 0), (128, 128), interpolation=cv2.INTER_LINEAR).astype(np.float32)
            batch.append(((img - 127.5) / 127.5)[None])
        with torch.no_grad():
            out = reference_forward(state, torch.from_numpy(np.stack(batch))).numpy()
        cos = np.dot(out[0], out[1]) / (np.linalg.norm(out[0]) * np.linalg.norm(out[1]))
        expected.append(float(np.arccos(cos)) / math.pi * 180)
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=0.02)
    assert 0.05 < values[0] < 1.0 < values[1]

    agg = metric.aggregate(values, num_gt=3)
    assert agg["identical"] == 1 and agg["count"] == 2
    assert agg["value"] == pytest.approx((values[1] + values[2]) / 2)


def test_deg_aggregate_quirks(arcface_files):
    metric = build_published_identity("deg", weights={"deg_arcface_resnet18": arcface_files["module"]})
    agg = metric.aggregate(np.array([0.5, 30.0, 40.0, 0.99]), num_gt=10)
    assert agg == {"value": 35.0, "identical": 2, "count": 2, "nan": 0}
    with_nan = metric.aggregate(np.array([30.0, np.nan]), num_gt=2)  # arccos(cos > 1): kept, so the mean is nan
    assert math.isnan(with_nan["value"]) and with_nan["identical"] == 0 and with_nan["nan"] == 1
    assert math.isnan(metric.aggregate(np.array([0.1]), num_gt=1)["value"])  # all identical: the script fails


# ------------------------------------------------------------------------------------------------ IDD (DAEFR)

def test_idd_reading_weights_bgr_channels_in_file_order(photos):
    for name in ("astronaut_png", "grace_png"):
        bgr = (_pil_rgb(photos[name])[..., ::-1] / 255.0).astype(np.float32)
        gray = 0.2989 * bgr[..., 0] + 0.5870 * bgr[..., 1] + 0.1140 * bgr[..., 2]  # 0.2989 on BLUE
        ours = idd_read(photos[name])
        assert ours.shape == (1, 128, 128)
        np.testing.assert_allclose(ours[0].numpy(), bilinear(gray.astype(np.float64), 128, 128), atol=2e-6)
    bgr = cv2.imread(str(photos["grace_jpg"])).astype(np.float32) / 255.0
    gray = 0.2989 * bgr[..., 0] + 0.5870 * bgr[..., 1] + 0.1140 * bgr[..., 2]
    np.testing.assert_allclose(idd_read(photos["grace_jpg"])[0].numpy(), bilinear(gray, 128, 128), atol=2e-6)


def test_idd_pure_blue_weighs_0_2989(tmp_path):
    for channel, weight in ((2, 0.2989), (1, 0.5870), (0, 0.1140)):  # RGB channel index
        rgb = np.zeros((64, 48, 3), np.uint8)
        rgb[..., channel] = 255
        path = tmp_path / f"c{channel}.png"
        Image.fromarray(rgb).save(path)
        np.testing.assert_allclose(idd_read(path).numpy(), weight, atol=1e-6)


def test_idd_pair_values_and_mean_over_gt_count(tmp_path, arcface_files, state, photos):
    metric = build_published_identity("idd", weights={"ida_arcface_resnet18": arcface_files["plain"]})
    restored = [photos["grace_png"], tmp_path / "missing.png", photos["grace_jpg"]]
    gt = [photos["astronaut_png"], photos["astronaut_png"], photos["astronaut_jpg"]]
    values = metric.pair_values(restored, gt)
    assert np.isnan(values[1]) and np.isnan(values[2])  # not there / not the `.png` the script looks up

    feats = []
    for p in (gt[0], restored[0]):  # the script: BGR /255, gray, bilinear 128, two separate forward passes
        img = torch.from_numpy(cv2.imread(str(p)).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        g = (0.2989 * img[:, 0] + 0.5870 * img[:, 1] + 0.1140 * img[:, 2]).unsqueeze(1)
        with torch.no_grad():
            feats.append(reference_forward(state, F.interpolate(g, (128, 128), mode="bilinear")).numpy()[0])
    angle = float(np.arccos(np.dot(feats[0], feats[1]) / (np.linalg.norm(feats[0]) * np.linalg.norm(feats[1]))))
    assert values[0] == pytest.approx(angle, rel=1e-4)
    assert 0 < values[0] < math.pi

    agg = metric.aggregate(values, num_gt=3)
    assert agg == {"value": pytest.approx(values[0] / 3), "count": 1, "skipped": 2}


# ------------------------------------------------------------------------------------------ IDS (ReF-LDM)

class _TinyRecogniser(torch.nn.Module):
    """Stand-in with the signature of w600k_r50: (B, 3, 112, 112) float -> (B, 512)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)
        self.fc = torch.nn.Linear(8 * 28 * 28, 512)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    model = _TinyRecogniser().eval()
    folder = tmp_path_factory.mktemp("onnx")
    fixed, dynamic = folder / "fixed.onnx", folder / "dynamic.onnx"
    x = torch.zeros(1, 3, 112, 112)
    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(fixed), input_names=["input.1"], output_names=["embedding"], dynamo=False)
        torch.onnx.export(model, (x,), str(dynamic), input_names=["input.1"], output_names=["embedding"],
                          dynamo=False, dynamic_axes={"input.1": {0: "None"}, "embedding": {0: "None"}})
    return model, fixed, dynamic


def _refldm_reference(path: Path) -> np.ndarray:
    """ReF-LDM read_image + normalize + IdentityLoss.preprocess, written out. (3, 112, 112)"""
    with Image.open(path) as im:
        if im.size != (512, 512):
            im = im.resize((512, 512), Image.Resampling.BICUBIC)  # PIL's default filter for RGB images
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 * 2.0 - 1.0
    crop = arr[32:480, 32:480].astype(np.float64)  # int(512 * 0.0625) : int(512 * 0.9375)
    return crop.reshape(112, 4, 112, 4, 3).mean(axis=(1, 3)).transpose(2, 0, 1)  # area resize 448 -> 112


def test_refldm_reading(photos):
    for name in ("astronaut_png", "grace_png", "grace_jpg"):
        ours = refldm_read(photos[name])
        assert ours.shape == (3, 112, 112)
        np.testing.assert_allclose(ours.numpy(), _refldm_reference(photos[name]), atol=1e-5)


@pytest.mark.parametrize("export", ["fixed", "dynamic"])
def test_refldm_ids_values(export, tiny_onnx, photos, tmp_path):
    model, fixed, dynamic = tiny_onnx
    onnx_path = fixed if export == "fixed" else dynamic
    metric = build_published_identity("ids_refldm", weights={"arcface_w600k_r50": onnx_path})
    restored = [photos["near_png"], photos["grace_png"], photos["grace_jpg"]]
    gt = [photos["astronaut_png"], photos["astronaut_png"], photos["astronaut_png"]]
    values = metric.pair_values(restored, gt)
    assert np.isnan(values[2])  # only `*.png` restored files are evaluated

    expected = []
    for r, g in zip(restored[:2], gt[:2]):
        with torch.no_grad():
            e_r = model(torch.from_numpy(_refldm_reference(r)).float()[None])
            e_g = model(torch.from_numpy(_refldm_reference(g)).float()[None])
        expected.append(1.0 - float(1 - F.cosine_similarity(e_r, e_g, dim=1)))
    np.testing.assert_allclose(values[:2], expected, rtol=1e-5, atol=1e-5)
    assert values[0] > values[1]

    agg = metric.aggregate(values, num_gt=3)
    assert agg == {"value": pytest.approx(np.mean(expected), abs=1e-5), "count": 2, "skipped": 1}

    with pytest.raises(FileNotFoundError, match="GT file missing"):
        metric.pair_values([photos["grace_png"]], [tmp_path / "nope.png"])
