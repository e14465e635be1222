"""Region masks from landmark polygons (real dlib-68 points on real photos) and the face-parsing wrappers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from honestface.data import samples
from honestface.face.alignment import align_face
from honestface.face.masks import REGIONS, region_masks, region_masks_torch
from honestface.face.parsing import (
    BISENET_CLASSES,
    LANDMARK_REGIONS,
    PARSENET_CLASSES,
    FaceParser,
    build_parser,
    parsing_region_masks,
    region_class_ids,
)
from honestface.face.schemes import DLIB68, FIVE, LandmarkScheme

DISJOINT = ("skin", "brows", "eyes", "lips", "inner_mouth")


@pytest.fixture(scope="module")
def aligned():
    """[(aligned FFHQ-512 crop, dlib-68 points on it)] for astronaut and grace_hopper."""
    from honestface.face.detection import build_detector
    from honestface.face.landmarks import build_landmarker

    det, lm = build_detector("mtcnn"), build_landmarker("dlib68")
    out = []
    for name in ("astronaut", "grace_hopper"):
        img = samples.load_sample(name)
        crop, _ = align_face(img, det.detect(img)[0].points5, "ffhq", 512)
        box = det.detect(crop)[0].box
        out.append((crop, lm.predict(crop, box[None])[0]))
    return out


def test_region_masks_on_real_faces(aligned):
    for crop, pts in aligned:
        masks = region_masks(pts, "dlib68", crop.shape)
        assert tuple(masks) == REGIONS
        for name, m in masks.items():
            assert m.shape == (512, 512) and m.dtype == np.float32, name
            assert set(np.unique(m)) <= {0.0, 1.0}, name
            assert m.sum() > 100, f"{name} is empty"
            assert not (m > masks["face"]).any(), f"{name} leaves the face"
        for i, a in enumerate(DISJOINT):
            for b in DISJOINT[i + 1:]:
                assert not (masks[a] * masks[b]).any(), f"{a} overlaps {b}"
        # the regions sit where the landmarks say: eye centres in eyes, nose tip in nose, mouth corners in lips
        for c in DLIB68.eye_centers(pts):
            assert masks["eyes"][int(np.rint(c[1])), int(np.rint(c[0]))] == 1
        assert masks["nose"][int(pts[30, 1]), int(pts[30, 0])] == 1
        # and the skin is most of the face; eyes are small
        area = {k: v.sum() for k, v in masks.items()}
        assert area["face"] > area["skin"] > 0.6 * area["face"]
        assert area["eyes"] < 0.05 * area["face"]
        # the face covers the forehead: above the brows, but not the top of the crop
        brow_top = pts[17:27, 1].min()
        col = masks["face"][:, int(pts[27, 0])]
        assert col[int(brow_top) - 40] == 1 and col[5] == 0


def test_feather_and_dilate(aligned):
    crop, pts = aligned[0]
    hard = region_masks(pts, DLIB68, crop.shape, regions=["eyes", "lips"])
    soft = region_masks(pts, DLIB68, crop.shape, regions=["eyes", "lips"], feather=3.0)
    for name in ("eyes", "lips"):
        s = soft[name]
        assert s.min() >= 0 and s.max() <= 1
        edge = ((s > 0.01) & (s < 0.99)).sum()
        assert edge > 100, "feathering should give values strictly inside (0, 1) at the edges"
        assert s.sum() == pytest.approx(hard[name].sum(), rel=0.05)  # a blur keeps the mass
    big = region_masks(pts, DLIB68, crop.shape, regions=["eyes"], dilate=4)["eyes"]
    assert big.sum() > 1.3 * hard["eyes"].sum() and not (hard["eyes"] > big).any()


def test_masks_do_not_depend_on_the_point_order(aligned):
    """Any scheme works through LandmarkScheme.indices: the same points under a shuffled layout give the same masks."""
    crop, pts = aligned[1]
    perm = np.random.default_rng(0).permutation(68)  # new index i holds old point perm[i]
    where = np.argsort(perm)
    shuffled = LandmarkScheme(
        "dlib68_shuffled", 68, {c: tuple(int(where[i]) for i in idx) for c, idx in DLIB68.components.items()}
    )
    ref = region_masks(pts, DLIB68, crop.shape)
    got = region_masks(pts[perm], shuffled, crop.shape)
    for name in REGIONS:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


def test_torch_batch_keeps_each_face_to_its_own_masks(aligned):
    """The batch entry point: (B, R, H, W) float32 in `regions` order, mask b follows face b alone (reordering the
    batch reorders the masks), and each face's eyes mask covers that face's eye landmarks."""
    pts = torch.tensor(np.stack([p for _, p in aligned]), dtype=torch.float32)
    regions = ("skin", "eyes", "lips")
    out = region_masks_torch(pts, "dlib68", (512, 512), regions=regions, feather=2.0)
    assert out.shape == (2, 3, 512, 512) and out.dtype == torch.float32 and out.device == pts.device
    assert torch.equal(region_masks_torch(pts.flip(0), "dlib68", (512, 512), regions=regions, feather=2.0).flip(0),
                       out)
    assert (out[0] - out[1]).abs().max() > 0.5  # two different faces, two different sets of masks
    for b in range(2):
        for eye in (range(36, 42), range(42, 48)):  # dlib 68: the two eye contours
            x, y = pts[b, list(eye)].mean(0).round().long().tolist()
            assert out[b, 1, y, x] > 0.5 and out[b, 0, y, x] < 0.5  # inside the eyes, outside the skin
    assert region_masks_torch(pts[:0], "dlib68", (8, 8)).shape == (0, len(REGIONS), 8, 8)


def test_region_mask_errors(aligned):
    _, pts = aligned[0]
    with pytest.raises(ValueError, match="scheme 'five' lacks"):
        region_masks(np.zeros((5, 2)), FIVE, (64, 64), regions=["face"])
    with pytest.raises(ValueError, match="expects points"):
        region_masks(pts[:60], DLIB68, (64, 64))
    with pytest.raises(ValueError, match="unknown region"):
        region_masks(pts, DLIB68, (64, 64), regions=["ears"])
    with pytest.raises(ValueError, match="NaN"):
        region_masks(np.full((68, 2), np.nan), DLIB68, (64, 64))


# ------------------------------------------------------------------------------------------------- parsing


def test_class_tables_and_region_names():
    assert len(BISENET_CLASSES) == len(PARSENET_CLASSES) == 19
    assert set(BISENET_CLASSES) == set(PARSENET_CLASSES)
    assert BISENET_CLASSES[17] == "hair" and PARSENET_CLASSES[13] == "hair"
    assert set(LANDMARK_REGIONS) == set(REGIONS)  # parsing gives the landmark builder's region names
    # one label map written in each table's indices gives identical region masks
    rng = np.random.default_rng(0)
    names = rng.integers(0, 19, size=(3, 32, 32))
    bis = np.vectorize(lambda i: BISENET_CLASSES.index(PARSENET_CLASSES[i]))(names)
    a = parsing_region_masks(names, "parsenet", regions=list(LANDMARK_REGIONS) + ["hair", "head"])
    b = parsing_region_masks(bis, "bisenet", regions=list(LANDMARK_REGIONS) + ["hair", "head"])
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert region_class_ids("eyes", "bisenet") == [4, 5]
    m = parsing_region_masks(torch.from_numpy(bis), "bisenet")
    assert m["skin"].dtype == torch.float32 and m["skin"].shape == (3, 32, 32)
    np.testing.assert_array_equal(m["lips"].numpy(), b["lips"])
    with pytest.raises(ValueError, match="region"):
        region_class_ids("tail")
    with pytest.raises(ValueError, match="table"):
        region_class_ids("eyes", "celeba")


@pytest.mark.parametrize("arch,size", [("bisenet", 256), ("parsenet", 64)])  # small sizes keep CI fast
def test_parser_loads_a_state_dict_and_runs(tmp_path, weights_home, arch, size):
    torch.manual_seed(0)
    path = tmp_path / f"{arch}.pth"
    torch.save(FaceParser(arch, input_size=size).net.state_dict(), path)
    parser = build_parser(arch, weights=path, input_size=size)
    assert not parser.training
    x = torch.rand(2, 3, 96, 80, requires_grad=True)
    logits = parser(x)
    assert logits.shape == (2, 19, 96, 80) and torch.isfinite(logits).all()
    logits[:, 1].mean().backward()  # differentiable, e.g. for a parsing-based loss
    assert x.grad is not None and x.grad.abs().sum() > 0
    labels = parser.parse(x)
    assert labels.shape == (2, 96, 80) and labels.dtype == torch.int64
    torch.testing.assert_close(labels, logits.argmax(1))
    masks = parser.region_masks(x[:1], regions=("skin", "hair"))
    assert masks["hair"].shape == (1, 96, 80)
    img = (x[0].detach().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert parser.predict(img).shape == (96, 80)
    # the network really holds the saved weights
    saved = torch.load(path, weights_only=True)
    k = next(iter(saved))
    torch.testing.assert_close(parser.net.state_dict()[k], saved[k])


def test_parser_missing_and_wrong_weights(tmp_path, weights_home):
    from honestface.weights import MissingWeightError

    with pytest.raises(MissingWeightError, match="parsing_bisenet"):
        build_parser("bisenet")
    with pytest.raises(MissingWeightError):
        build_parser("parsenet", weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="does not match a facexlib bisenet"):
        build_parser("bisenet", weights=bad)
    with pytest.raises(ValueError, match="unknown parsing network"):
        build_parser("segformer")
