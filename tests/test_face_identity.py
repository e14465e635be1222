"""Identity embeddings (honestface.face.identity, honestface.face.iresnet).

- dlib (real bundled weights): a face's embedding is nearest to a flipped / jittered copy of itself among the six
  faces of insightface t1.jpg plus the astronaut and Grace Hopper; the three alignment paths agree.
- iResNet: the state dict layout equals an independent description of insightface arcface_torch's keys; a random
  checkpoint loads through the registry path with an explicit `weights=`; output is unit-norm 512-D; gradients
  reach the input and no backbone parameter trains; wrong keys give a clear error.
- ArcFace ONNX: a tiny random iResNet exported to ONNX runs through the backend with insightface's preprocessing.
- cosine / angle helpers.
"""

from __future__ import annotations

import functools
import warnings

import cv2
import numpy as np
import pytest
import torch

from honestface.data import samples
from honestface.face.identity import (
    build_identity_encoder,
    cosine_similarity,
    identity_angle_degrees,
    pairwise_cosine,
)
from honestface.face.iresnet import IRESNET_LAYERS, IResNet
from honestface.face.types import FaceDetection
from honestface.weights import MissingWeightError, get_entry


# ----------------------------------------------------------------------------------------------- helpers
@functools.cache
def _dlib_detector():
    from honestface.face.detection import build_detector

    return build_detector("dlib")  # HOG boxes, points5 and the 68 points in extra["landmarks"]


def _detect(image: np.ndarray) -> list[FaceDetection]:
    """dlib HOG faces of an image, largest first."""
    return sorted(_dlib_detector().detect(image), key=lambda d: -d.area)


def _jitter(crop: np.ndarray, dx: float = 3.0, dy: float = -2.0, scale: float = 1.04, gain: float = 1.15):
    """Small shift / zoom about the centre / brightness change of an aligned crop (uint8)."""
    s = crop.shape[0]
    m = cv2.getRotationMatrix2D((s / 2, s / 2), 0.0, scale)
    m[:, 2] += (dx, dy)
    out = cv2.warpAffine(crop, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _arcface_torch_layout(layers, widths=(64, 128, 256, 512), num_features=512) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an insightface arcface_torch iResNet state dict, written out from its description."""

    def bn(prefix: str, c: int) -> dict:
        return {
            f"{prefix}.weight": (c,),
            f"{prefix}.bias": (c,),
            f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,),
            f"{prefix}.num_batches_tracked": (),
        }

    keys = {"conv1.weight": (widths[0], 3, 3, 3), **bn("bn1", widths[0]), "prelu.weight": (widths[0],)}
    cin = widths[0]
    for stage, (n, cout) in enumerate(zip(layers, widths), start=1):
        for b in range(n):
            p, c_in = f"layer{stage}.{b}", (cin if b == 0 else cout)
            keys.update(bn(f"{p}.bn1", c_in))
            keys[f"{p}.conv1.weight"] = (cout, c_in, 3, 3)
            keys.update(bn(f"{p}.bn2", cout))
            keys[f"{p}.prelu.weight"] = (cout,)
            keys[f"{p}.conv2.weight"] = (cout, cout, 3, 3)
            keys.update(bn(f"{p}.bn3", cout))
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                keys.update(bn(f"{p}.downsample.1", cout))
        cin = cout
    keys.update(bn("bn2", cin))
    keys.update({"fc.weight": (num_features, cin * 49), "fc.bias": (num_features,)})
    keys.update(bn("features", num_features))
    return keys


def _random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A well-scaled random state dict for a layout (finite activations through 50 layers)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        elif k.endswith(("running_mean", "bias")):
            state[k] = 0.05 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # bn / prelu weights
            state[k] = 1.0 + 0.05 * torch.randn(shape, generator=g) if "prelu" not in k else torch.full(shape, 0.25)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[k] = torch.randn(shape, generator=g) * (0.5 / fan_in) ** 0.5
    state["features.weight"] = torch.ones(layout["features.weight"])
    return state


@pytest.fixture(scope="module")
def dlib_encoder():
    return build_identity_encoder("dlib")


@pytest.fixture(scope="module")
def t1_faces():
    image = samples.group_t1()
    dets = _detect(image)
    assert len(dets) == 6, f"expected 6 faces in t1.jpg, found {len(dets)}"
    return image, dets


# ----------------------------------------------------------------------------------------------- dlib
def test_dlib_face_is_nearest_to_its_flipped_and_jittered_copies(dlib_encoder, t1_faces):
    enc = dlib_encoder
    assert (enc.name, enc.dim, enc.crop_size, enc.differentiable) == ("dlib", 128, 150, False)
    image, dets = t1_faces
    crops = [enc.align(image, d) for d in dets]
    for photo in (samples.astronaut(), samples.grace_hopper()):
        crops.append(enc.align(photo, _detect(photo)[0]))  # largest box (HOG also flags the astronaut's patch)
    gallery = enc.embed(crops)  # (8, 128)
    assert gallery.shape == (8, 128) and gallery.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(gallery, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(enc.embed(crops), gallery)  # deterministic

    for variant in (lambda c: np.ascontiguousarray(c[:, ::-1]), _jitter):
        probes = enc.embed([variant(c) for c in crops])
        sim = pairwise_cosine(probes, gallery)  # (8, 8)
        np.testing.assert_array_equal(sim.argmax(axis=1), np.arange(8))
        # and by a margin: the copy is more similar than the closest other face
        off = np.where(np.eye(8, dtype=bool), -1.0, sim)
        assert (np.diag(sim) - off.max(axis=1)).min() > 0.03


def test_dlib_alignment_paths_agree(dlib_encoder, t1_faces):
    """Box + dlib 5-point predictor, the 68-point shape and bare points5 give nearly the same embedding."""
    image, dets = t1_faces
    by_box = dlib_encoder.embed_image(image, dets)  # (6, 128)
    by_68 = dlib_encoder.embed_image(image, np.stack([d.extra["landmarks"] for d in dets]))
    by_5 = dlib_encoder.embed_image(image, [d.points5 for d in dets])
    assert by_box.shape == by_68.shape == by_5.shape == (6, 128)
    for other in (by_68, by_5):
        assert cosine_similarity(by_box, other).min() > 0.93
        np.testing.assert_array_equal(pairwise_cosine(other, by_box).argmax(1), np.arange(6))
    one = dlib_encoder.embed_image(image / 255.0, dets[0])  # float image in [0, 1], one face
    assert one.shape == (1, 128) and cosine_similarity(one[0], by_box[0]) > 0.999


def test_encoder_input_errors(dlib_encoder):
    with pytest.raises(ValueError, match="150x150"):
        dlib_encoder.embed(np.zeros((112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown identity encoder 'facenet'"):
        build_identity_encoder("facenet")
    with pytest.raises(FileNotFoundError, match="nope.dat"):
        build_identity_encoder("dlib", weights="/nonexistent/nope.dat")


# ----------------------------------------------------------------------------------------------- iResNet
def test_iresnet_state_dict_matches_arcface_torch_layout():
    for arch, layers in IRESNET_LAYERS.items():
        with torch.device("meta"):
            net = IResNet.from_preset(arch)
        got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert got == _arcface_torch_layout(layers), arch
    with torch.device("meta"):
        sd = IResNet.from_preset("ir50").state_dict()
    known = {
        "conv1.weight": (64, 3, 3, 3),
        "layer1.0.bn1.weight": (64,),
        "layer1.0.downsample.0.weight": (64, 64, 1, 1),
        "layer2.0.downsample.1.running_var": (128,),
        "layer3.13.conv2.weight": (256, 256, 3, 3),
        "layer4.2.prelu.weight": (512,),
        "bn2.weight": (512,),
        "fc.weight": (512, 25088),
        "features.weight": (512,),
    }
    for key, shape in known.items():
        assert tuple(sd[key].shape) == shape, key
    assert "layer3.14.conv1.weight" not in sd and not any(k.startswith("dropout") for k in sd)


def test_iresnet_encoder_from_checkpoint_is_frozen_and_differentiable(tmp_path, weights_home):
    state = _random_state(_arcface_torch_layout(IRESNET_LAYERS["ir50"]))
    path = tmp_path / "backbone.pth"
    torch.save(state, path)

    enc = build_identity_encoder("iresnet", weights=path)  # arch inferred from the file: ir50
    assert (enc.name, enc.dim, enc.crop_size, enc.differentiable, enc.arch) == ("iresnet", 512, 112, True, "ir50")
    torch.testing.assert_close(enc.net.fc.weight, state["fc.weight"])
    assert not any(p.requires_grad for p in enc.net.parameters()) and not enc.net.training

    x = (torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(1)) * 2 - 1).requires_grad_(True)
    emb = enc.embed_torch(x)  # (2, 512)
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    (1 - cosine_similarity(emb[0], emb[1])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.net.parameters())

    # numpy path (uint8 crops, arcface_torch normalisation) equals the tensor path
    crops = np.round((x.detach().numpy().transpose(0, 2, 3, 1) + 1) * 127.5).astype(np.uint8)
    as_tensor = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_allclose(enc.embed(crops), enc.embed_torch(as_tensor).numpy(), atol=1e-5)

    # the same file under a DataParallel "module." prefix, with the arch given
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    assert IResNet.from_checkpoint(tmp_path / "ddp.pth", "ir50").arch == "ir50"


def test_iresnet_checkpoint_errors(tmp_path, weights_home):
    layout = _arcface_torch_layout(IRESNET_LAYERS["ir18"], widths=(8, 16, 32, 64))
    state = _random_state(layout)
    torch.save(state, tmp_path / "ok.pth")
    net = IResNet.from_checkpoint(tmp_path / "ok.pth")  # narrow widths are read from the shapes
    assert net.arch == "ir18" and net.widths == (8, 16, 32, 64)

    bad = dict(state)
    bad["head.weight"] = bad.pop("fc.weight")
    torch.save(bad, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"missing keys: fc\.weight; unexpected keys: head\.weight"):
        IResNet.from_checkpoint(tmp_path / "renamed.pth", "ir18")
    with pytest.raises(ValueError, match=r"block counts \(2, 2, 2, 2\) \(ir18\) do not fit arch ir34"):
        IResNet.from_checkpoint(tmp_path / "ok.pth", "ir34")  # wrong depth for the file
    with pytest.raises(ValueError, match="unknown iResNet arch 'ir51'"):
        IResNet.from_checkpoint(tmp_path / "ok.pth", "ir51")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_identity_encoder("iresnet", weights=tmp_path / "missing.pth")
    with pytest.raises(MissingWeightError, match="arcface_torch_r100|backbone"):
        build_identity_encoder("iresnet", arch="ir100")  # nothing in the empty $HONESTFACE_HOME

    # once the file sits at the registry entry's place under $HONESTFACE_HOME, no path is needed
    target = weights_home / get_entry("arcface_torch_r100").relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_random_state(_arcface_torch_layout(IRESNET_LAYERS["ir100"], widths=(8, 8, 8, 8))), target)
    enc = build_identity_encoder("iresnet", arch="ir100")
    assert enc.arch == "ir100" and enc.embed(np.zeros((1, 112, 112, 3), np.uint8)).shape == (1, 512)


# ----------------------------------------------------------------------------------------------- ArcFace ONNX
@pytest.fixture(scope="module")
def tiny_arcface_onnx(tmp_path_factory):
    torch.manual_seed(0)
    net = IResNet.from_preset("ir18", widths=(8, 16, 32, 64)).eval()
    path = tmp_path_factory.mktemp("arcface") / "arc.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy (TorchScript) exporter: no onnxscript here
        torch.onnx.export(
            net,
            torch.zeros(1, 3, 112, 112),
            str(path),
            input_names=["data"],
            output_names=["fc1"],
            dynamic_axes={"data": {0: "N"}},
            dynamo=False,
        )
    return net, path


def test_arcface_onnx_backend_matches_insightface_preprocessing(tiny_arcface_onnx, weights_home):
    net, path = tiny_arcface_onnx
    enc = build_identity_encoder("arcface_onnx", weights=path, device="cpu")
    assert (enc.name, enc.dim, enc.crop_size, enc.differentiable) == ("arcface_onnx", 512, 112, False)
    assert (enc.input_mean, enc.input_std) == (127.5, 127.5)

    from honestface.face.alignment import align_face

    colour = [  # ArcFace crops of colour photos (the bundled Tom Hanks crop is grey, blind to channel order)
        align_face(photo, _detect(photo)[0].points5, template="arcface", size=112, border="constant")[0]
        for photo in (samples.astronaut(), samples.grace_hopper())
    ]
    crops = np.stack([samples.tom_hanks_aligned(), *colour, _jitter(colour[0])])  # (4, 112, 112, 3) RGB uint8
    emb = enc.embed(crops)
    assert emb.shape == (4, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(enc.embed(crops), emb)
    assert cosine_similarity(emb[1], enc.embed(colour[0][..., ::-1])[0]) < 0.999  # channel order matters

    with torch.no_grad():  # the same network in torch, arcface_torch normalisation
        ref = torch.nn.functional.normalize(net(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1))
    np.testing.assert_allclose(emb, ref.numpy(), atol=1e-4)

    from insightface.model_zoo import get_model  # insightface itself, fed BGR as it expects

    feat = get_model(str(path), providers=["CPUExecutionProvider"]).get_feat([c[:, :, ::-1] for c in crops])
    np.testing.assert_allclose(emb, feat / np.linalg.norm(feat, axis=1, keepdims=True), atol=1e-4)

    with pytest.raises(MissingWeightError):
        build_identity_encoder("arcface_onnx")  # no w600k_r50.onnx in the empty $HONESTFACE_HOME
    with pytest.raises(ValueError, match="unknown arcface_onnx model 'r34'"):
        build_identity_encoder("arcface_onnx", arch="r34")


def test_arcface_embed_image_aligns_to_the_112_template(tiny_arcface_onnx, tmp_path, weights_home):
    net, path = tiny_arcface_onnx
    onnx_enc = build_identity_encoder("arcface_onnx", weights=path)
    torch.save(net.state_dict(), tmp_path / "tiny.pth")
    torch_enc = build_identity_encoder("iresnet", weights=tmp_path / "tiny.pth")
    image = samples.astronaut()
    det = _detect(image)[0]
    a = onnx_enc.embed_image(image, det)
    b = torch_enc.embed_image(image, det.points5)
    assert a.shape == b.shape == (1, 512)
    np.testing.assert_allclose(a, b, atol=1e-4)  # same net, same alignment, two runtimes

    from honestface.face.alignment import align_face

    crop, _ = align_face(image, det.points5, template="arcface", size=112)
    np.testing.assert_allclose(onnx_enc.embed(crop), a, atol=1e-6)

    # differentiable end to end: whole image + points -> embedding
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1).requires_grad_(True)
    e = torch_enc.embed_aligned_torch(x, torch.from_numpy(det.points5)[None].float())
    assert e.shape == (1, 512)
    assert cosine_similarity(e.detach().numpy(), a) > 0.99
    e.sum().backward()
    assert x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- helpers
def test_cosine_and_angle_helpers_numpy_and_torch_agree():
    e1, e2 = np.eye(4)[0], np.eye(4)[1]
    assert cosine_similarity(e1, 3 * e1) == pytest.approx(1.0)
    assert identity_angle_degrees(e1, 3 * e1) == pytest.approx(0.0, abs=1e-6)
    assert cosine_similarity(e1, e2) == pytest.approx(0.0)
    assert identity_angle_degrees(e1, e2) == pytest.approx(90.0)
    assert identity_angle_degrees(e1, -e1) == pytest.approx(180.0)
    assert identity_angle_degrees(e1, e1 + e2) == pytest.approx(45.0)

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 16)), rng.normal(size=(7, 16))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_allclose(cosine_similarity(ta, tb[:5]).numpy(), cosine_similarity(a, b[:5]), atol=1e-12)
    np.testing.assert_allclose(identity_angle_degrees(ta, tb[:5]).numpy(), identity_angle_degrees(a, b[:5]))
    pc = pairwise_cosine(a, b)
    assert pc.shape == (5, 7)
    np.testing.assert_allclose(pairwise_cosine(ta, tb).numpy(), pc, atol=1e-12)
    np.testing.assert_allclose(pc[np.arange(5), np.arange(5)], cosine_similarity(a, b[:5]))
    assert identity_angle_degrees(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])).item() == 0.0
