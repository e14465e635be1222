"""HonestFacePipeline on the tiny random model: aligned and whole-photo restoration, reference matching and
caching, colour fixes, bf16. Real faces come from the photos bundled with installed packages (offline)."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from honestface.data.samples import astronaut, grace_hopper, group_t1
from honestface.data.views import augmented_views
from honestface.face import build_detector, build_identity_encoder, extract_faces
from honestface.pipelines import HonestFacePipeline, ReferencePool, adain_color_fix, wavelet_color_fix


def _key(image: np.ndarray) -> str:
    a = np.ascontiguousarray(image)
    return hashlib.sha1(a.tobytes() + str(a.shape).encode()).hexdigest()


class CachingDetector:
    """MTCNN is slow on a loaded CPU: detect each distinct image once for the whole module."""

    def __init__(self, detector) -> None:
        self.detector, self.cache = detector, {}

    def detect(self, image: np.ndarray):
        key = _key(image)
        if key not in self.cache:
            self.cache[key] = self.detector.detect(image)
        return self.cache[key]


class CountingEncoder:
    """Identity encoder wrapper that records the content of every image it embeds."""

    def __init__(self, encoder) -> None:
        self.encoder, self.seen = encoder, []

    def embed_image(self, image, faces):
        self.seen.append(_key(image))
        return self.encoder.embed_image(image, faces)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


@pytest.fixture(scope="module")
def model_dir(tiny_honestface_dir):
    return tiny_honestface_dir  # conftest: one saved tiny model for every module


@pytest.fixture(scope="module")
def detector():
    # threshold as build_sample_identities; t1's faces are > 90 px, so a coarser pyramid (min 40 px) is enough
    return CachingDetector(build_detector("mtcnn", threshold=0.9, min_face_size=40))


@pytest.fixture(scope="module")
def encoder():
    return build_identity_encoder("dlib")


@pytest.fixture(scope="module")
def pipe(model_dir, detector, encoder):
    return HonestFacePipeline.from_pretrained(model_dir, detector=detector, identity=encoder)


@pytest.fixture(scope="module")
def t1_faces(detector):
    return extract_faces(group_t1(), detector, size=256)


@pytest.fixture(scope="module")
def mixed_pool(t1_faces, detector, encoder):
    """Two views (flipped / jittered) of each t1 face, plus two views each of astronaut and grace_hopper."""
    crops, ids = [], []
    for i, face in enumerate(t1_faces):
        crops += augmented_views(face.crop, 2, seed=i)
        ids += [f"t1_{i}_v0", f"t1_{i}_v1"]
    for name, photo in (("astronaut", astronaut()), ("grace", grace_hopper())):
        crops += augmented_views(extract_faces(photo, detector, size=256)[0].crop, 2, seed=7)
        ids += [f"{name}_v0", f"{name}_v1"]
    return ReferencePool(crops, encoder, ids=ids)


@pytest.fixture(scope="module")
def t1_result(pipe, mixed_pool):
    return pipe(group_t1(), mixed_pool, mode="photo", max_references=2, ref_threshold=0.85)


def test_aligned_mixed_sizes_keep_size_and_are_deterministic(pipe, t1_faces):
    inputs = [cv2.resize(f.crop, (s, s), interpolation=cv2.INTER_AREA) for f, s in zip(t1_faces, (64, 48, 100))]
    inputs.append(cv2.resize(t1_faces[3].crop, (72, 56)))  # not square, not a multiple of 8
    out = pipe(inputs, batch_size=2)
    assert len(out.images) == len(out.faces) == 4
    for img, res, info in zip(inputs, out.images, out.faces):
        assert res.shape == img.shape and res.dtype == np.uint8
        assert len(info) == 1 and info[0].restored and info[0].blind and info[0].box is None
    assert np.abs(out.images[0].astype(int) - inputs[0]).mean() > 1  # the model did change the face
    again = pipe(inputs, batch_size=3)  # other batching, same seed: same faces
    for a, b in zip(out.images, again.images):
        np.testing.assert_allclose(a, b, atol=1)
    other = pipe(inputs[:1], seed=1)
    assert not np.array_equal(other.images[0], out.images[0])


def test_default_batch_is_one_face_per_call_on_a_cpu_and_four_on_a_gpu(pipe, t1_faces, monkeypatch):
    """batch_size=None (the default of the pipeline, scripts/infer.py and restore_video) follows the device: on a
    CPU batching measured no faster per face and raised the peak memory (issue 17)."""
    calls = []
    restore = pipe._restore_batch
    monkeypatch.setattr(pipe, "_restore_batch", lambda jobs, *a: (calls.append(len(jobs)), restore(jobs, *a))[1])
    inputs = [f.crop for f in t1_faces[:3]]
    pipe(inputs)
    assert pipe.default_batch_size == 1 and calls == [1, 1, 1]
    calls.clear()
    pipe(inputs, batch_size=2)
    assert calls == [2, 1]
    monkeypatch.setattr(HonestFacePipeline, "device", property(lambda self: torch.device("cuda")))
    assert pipe.default_batch_size == 4


def test_input_forms_give_the_same_result(pipe, t1_faces, tmp_path):
    from honestface.io import write_image

    crop = cv2.resize(t1_faces[1].crop, (64, 64), interpolation=cv2.INTER_AREA)
    path = write_image(tmp_path / "face.png", crop)
    tensor = torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0  # (3, H, W) in [0, 1]
    forms = [path, str(path), Image.fromarray(crop), crop, crop.astype(np.float32) / 255.0, tensor, tensor[None]]
    out = pipe(forms, batch_size=1)  # batch neighbours may move a pixel by one rounding step; compare exactly
    assert len(out.images) == len(forms)
    for res in out.images[1:]:
        np.testing.assert_array_equal(res, out.images[0])
    np.testing.assert_array_equal(pipe(crop).images[0], out.images[0])


def test_photo_mode_restores_six_faces_and_keeps_the_background(t1_result, t1_faces):
    photo = group_t1()
    (image,), (faces,), (mask,) = t1_result.images, t1_result.faces, t1_result.masks
    assert image.shape == photo.shape and image.dtype == np.uint8 and mask.shape == photo.shape[:2]
    assert len(faces) == 6 and all(f.restored and f.reason is None for f in faces)
    for info, face in zip(faces, t1_faces):
        np.testing.assert_allclose(info.box, face.detection.box)
    outside = mask == 0
    assert 0.5 < outside.mean() < 0.99
    np.testing.assert_array_equal(image[outside], photo[outside])  # bit-identical outside the pasted masks
    inside = mask > 0.5
    assert np.abs(image[inside].astype(int) - photo[inside]).mean() > 1


def test_mixed_pool_picks_references_of_the_same_person(t1_result):
    for i, info in enumerate(t1_result.faces[0]):
        assert not info.blind and len(info.references) == 2
        assert all(r.startswith(f"t1_{i}_") for r in info.references), (i, info.references)
        assert -1 <= info.output_ref_similarity <= 1 and 0.85 <= info.input_ref_similarity <= 1


def test_tiny_face_is_left_alone(pipe):
    face = cv2.resize(astronaut()[40:200, 150:300], (75, 80), interpolation=cv2.INTER_AREA)
    image = np.full((200, 220, 3), 128, np.uint8)
    image[60:140, 70:145] = face
    out = pipe(image, mode="photo", min_face_size=80)
    (info,) = out.faces[0]
    assert not info.restored and info.reason.startswith("too small") and info.box is not None
    np.testing.assert_array_equal(out.images[0], image)
    assert out.masks[0].max() == 0
    small = pipe(image, mode="photo", min_face_size=20)
    assert small.faces[0][0].restored

    def centroid(m):
        yy, xx = np.nonzero(m > 0.5)
        return np.array([xx.mean(), yy.mean()])

    big = pipe(image, mode="photo", min_face_size=20, upscale=2)  # the face lands where it was, twice as big
    assert big.images[0].shape == (400, 440, 3)
    np.testing.assert_allclose(centroid(big.masks[0]), 2 * centroid(small.masks[0]) + 0.5, atol=1.0)
    assert abs((big.masks[0] > 0.5).sum() / (small.masks[0] > 0.5).sum() - 4) < 0.2


def test_references_below_threshold_mean_blind(pipe, t1_faces, detector, encoder):
    others = [extract_faces(p, detector, size=256)[0].crop for p in (astronaut(), grace_hopper())]
    pool = ReferencePool(others, encoder)
    info = pipe(t1_faces[0].crop, pool, ref_threshold=0.95).faces[0][0]
    assert info.restored and info.blind and info.references == []
    assert info.reason == "no reference above threshold" and info.output_ref_similarity is None


def test_reference_embeddings_and_features_are_computed_once(pipe, t1_faces, encoder, monkeypatch):
    counting = CountingEncoder(encoder)
    views = augmented_views(t1_faces[2].crop, 3, seed=3)
    pool = ReferencePool(views, counting)
    calls = []
    original = pipe.model.encode_references
    monkeypatch.setattr(pipe.model, "encode_references", lambda *a, **k: calls.append(1) or original(*a, **k))
    pipe._ref_cache.clear()
    inputs = [t1_faces[2].crop, *augmented_views(t1_faces[2].crop, 3, seed=9)]  # 4 faces of one person
    for _ in range(2):
        out = pipe(inputs, pool, batch_size=2, ref_threshold=0.8)
        assert all(len(f[0].references) == 3 for f in out.faces)
    ref_keys = {_key(v) for v in views}
    assert sorted(k for k in counting.seen if k in ref_keys) == sorted(ref_keys)  # each reference embedded once
    assert len(calls) == 1  # one model-side encoding for the whole reference set
    per_input = pipe(inputs[:2], [views[:2], None], ref_threshold=0.8)  # a list per input; None = blind
    assert sorted(per_input.faces[0][0].references) == ["ref0", "ref1"] and per_input.faces[1][0].blind


def test_color_fixes():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    target = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * xx * yy], -1).astype(np.float32)  # smooth
    texture = rng.normal(0, 0.05, (64, 64, 3)).astype(np.float32)
    output = (target[..., ::-1] * 0.6 + 0.3 + texture).astype(np.float32)  # wrong colours + fine detail
    ad = adain_color_fix(output, target)
    np.testing.assert_allclose(ad.mean((0, 1)), target.mean((0, 1)), atol=1e-4)
    np.testing.assert_allclose(ad.std((0, 1), ddof=1), target.std((0, 1), ddof=1), atol=1e-4)
    t = torch.from_numpy(output).permute(2, 0, 1)[None]
    ad_t = adain_color_fix(t, torch.from_numpy(target).permute(2, 0, 1)[None])
    np.testing.assert_allclose(ad_t[0].permute(1, 2, 0).numpy(), ad, atol=1e-5)

    wv = wavelet_color_fix(output, target)

    def blur(x):
        return cv2.GaussianBlur(x, (0, 0), 6, borderType=cv2.BORDER_REPLICATE)

    assert np.abs(blur(output) - blur(target)).mean() > 0.1  # the colours really were off
    assert np.abs(blur(wv) - blur(target)).mean() < 0.02  # the fix has the input's low frequencies
    detail_out, detail_fix = output - blur(output), wv - blur(wv)
    assert np.corrcoef(detail_out.ravel(), detail_fix.ravel())[0, 1] > 0.9  # the restored detail is kept
    u8 = wavelet_color_fix((output.clip(0, 1) * 255).astype(np.uint8), (target * 255).astype(np.uint8))
    assert u8.dtype == np.uint8 and u8.shape == output.shape


def test_bf16_and_merged_lora_stay_close_to_fp32(model_dir, pipe, t1_faces):
    inputs = [cv2.resize(f.crop, (64, 64), interpolation=cv2.INTER_AREA) for f in t1_faces[:2]]
    refs = augmented_views(t1_faces[0].crop, 2, seed=5)
    ref_out = pipe(inputs, [refs, None], ref_threshold=0.0).images
    low = HonestFacePipeline.from_pretrained(model_dir, detector=None, identity=pipe.identity_encoder,
                                             dtype=torch.bfloat16)
    assert low.dtype == torch.bfloat16
    low.merge_lora()
    low.merge_lora()  # idempotent
    out = low(inputs, [refs, None], ref_threshold=0.0)
    assert sorted(out.faces[0][0].references) == ["ref0", "ref1"]
    for a, b in zip(out.images, ref_out):
        assert a.dtype == np.uint8 and np.abs(a.astype(float) - b).mean() < 6.0


def test_channels_last_and_vae_slicing_keep_the_output(model_dir, pipe, t1_faces):
    """The CPU speed/memory switches of scripts/infer.py change the layout and batching, not the restoration."""
    inputs = [cv2.resize(f.crop, (64, 64), interpolation=cv2.INTER_AREA) for f in t1_faces[:3]]
    ref_out = pipe(inputs, batch_size=3).images
    # channels_last=True reads the folder's convolution weights straight into that layout (infer.channels_last)
    fast = HonestFacePipeline.from_pretrained(model_dir, detector=None, identity=pipe.identity_encoder,
                                              channels_last=True)
    fast.enable_vae_slicing()
    for conv in (fast.model.vae.decoder.conv_in.weight, fast.model.generator.unet.conv_in.weight):
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast.model.vae.use_slicing
    for a, b in zip(fast(inputs, batch_size=3).images, ref_out):
        assert np.abs(a.astype(float) - b).max() <= 1.0  # float rounding of the other kernels only
