"""honestface.metrics.temporal: face_warp_error on synthetic clips whose motion, flicker and occlusions we know."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import skimage.data

from honestface.metrics.temporal import face_warp_error, non_occlusion_mask, optical_flow, warp_with_flow

PHOTO = skimage.data.astronaut()  # 512 x 512 RGB


def _pan(n: int = 6, dx: int = 2, dy: int = 1, size: int = 128) -> list[np.ndarray]:
    """A camera pan over the photo: the content moves by (-dx, -dy) pixels per frame."""
    return [np.ascontiguousarray(PHOTO[40 + dy * t:40 + dy * t + size, 130 + dx * t:130 + dx * t + size])
            for t in range(n)]


def _noisy(frames: list[np.ndarray], sigma: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(f + rng.normal(0.0, sigma, f.shape), 0, 255).round().astype(np.uint8) for f in frames]


def test_optical_flow_recovers_a_known_shift_and_warping_undoes_it():
    a, b = _pan(2, dx=3, dy=2)
    flow = optical_flow(b, a)  # pixels of b -> a: content moved by (-3, -2), so b(x) = a(x + (3, 2))
    assert np.median(flow[..., 0]) == pytest.approx(3.0, abs=0.1)
    assert np.median(flow[..., 1]) == pytest.approx(2.0, abs=0.1)
    warped = warp_with_flow(a.astype(np.float32), flow)
    inner = np.s_[8:-8, 8:-8]
    assert np.abs(warped[inner] - b[inner]).mean() < 0.1 * np.abs(a[inner].astype(np.float32) - b[inner]).mean()


def test_a_static_video_has_no_error():
    frames = [_pan(1)[0]] * 5
    result = face_warp_error(frames, frames)
    assert result.count == 4 and result.value == pytest.approx(0.0, abs=1e-9)


def test_a_moving_video_judged_by_its_own_flow_has_near_zero_error():
    frames = _pan(6, dx=2, dy=1)
    result = face_warp_error(frames, frames)
    unwarped = np.mean([((a / 255.0 - b / 255.0) ** 2).mean() * 1e3 for a, b in itertools.pairwise(frames)])
    assert result.count == 5
    assert result.value < 0.05 and result.value < unwarped / 100  # x1e3: MSE below 5e-5 of [0, 1] RGB
    assert all(p["valid"] > 0.8 for p in result.per_pair)


def test_flicker_raises_the_error_with_its_strength():
    guide = _pan(6)
    values = [face_warp_error(_noisy(guide, s), guide).value for s in (0.0, 2.0, 4.0, 8.0)]
    assert values == sorted(values) and len(set(values)) == 4
    # independent noise of std s (pixel values) on both frames: expected x1e3 MSE 2 s^2 / 255^2 * 1e3
    assert values[3] == pytest.approx(2 * 8.0 ** 2 / 255 ** 2 * 1e3, rel=0.2)


def test_a_temporally_smoothed_restoration_scores_better_than_a_flickering_one():
    guide = _pan(6)
    flicker = _noisy(guide, 6.0)
    smooth = [flicker[0]]
    for t in range(1, len(guide)):  # blend each frame with the previous smoothed frame carried along the motion
        prev = warp_with_flow(smooth[-1].astype(np.float32), optical_flow(guide[t], guide[t - 1]))
        smooth.append(np.clip(0.5 * flicker[t] + 0.5 * prev, 0, 255).round().astype(np.uint8))
    assert face_warp_error(smooth, guide).value < 0.7 * face_warp_error(flicker, guide).value


def test_boxes_restrict_the_error_to_the_faces():
    guide = _pan(5)
    box = np.array([[40.0, 40.0, 80.0, 80.0]])  # grown by 20% per side: the crop is [32, 32, 88, 88)
    boxes = [box] * len(guide)
    outside, inside = [f.copy() for f in guide], [f.copy() for f in guide]
    rng = np.random.default_rng(1)
    for t in range(len(guide)):
        outside[t][:, 96:] = rng.integers(0, 256, outside[t][:, 96:].shape)
        inside[t][50:70, 50:70] = rng.integers(0, 256, (20, 20, 3))
    clean = face_warp_error(guide, guide, boxes)
    assert all(p["box"] == [32, 32, 88, 88] for p in clean.per_pair) and clean.count == 4
    assert face_warp_error(outside, guide, boxes).value == pytest.approx(clean.value, abs=1e-12)
    assert face_warp_error(inside, guide, boxes).value > clean.value + 10
    assert face_warp_error(outside, guide).value > clean.value + 10  # without boxes: the whole frame counts


def test_a_face_without_a_match_in_the_previous_frame_is_not_counted():
    guide = _pan(3)
    boxes = [np.array([[10.0, 10.0, 50.0, 50.0]]), np.array([[70.0, 70.0, 110.0, 110.0]]), np.zeros((0, 4))]
    result = face_warp_error(guide, guide, boxes)
    assert result.count == 0 and np.isnan(result.value) and result.per_pair == []


def _occlusion_clip() -> tuple[list[np.ndarray], int]:
    """A textured square (60 px) sliding right by 10 px per frame over a static textured background (coffee): at
    frame t the 10-px strip it leaves behind shows background that frame t - 1 did not show."""
    background = np.ascontiguousarray(skimage.data.coffee()[100:260, 200:360])
    square = cv2.resize(PHOTO[100:200, 180:260], (60, 60), interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(4):
        f = background.copy()
        f[50:110, 20 + 10 * t:80 + 10 * t] = square
        frames.append(f)
    return frames, 10


def test_disoccluded_pixels_are_excluded():
    guide, step = _occlusion_clip()
    for t in range(1, len(guide)):
        mask = non_occlusion_mask(optical_flow(guide[t], guide[t - 1]), optical_flow(guide[t - 1], guide[t]))
        left = 20 + step * t  # the square's left edge; columns left - 10 .. left show background new at frame t
        assert mask[52:108, left - 8:left - 2].mean() < 0.05
        assert mask[0:40].mean() > 0.9 and mask[60:100, left + 15:left + 45].mean() > 0.9  # background, square
    # what a restoration paints where frame t shows something new cannot be judged against frame t - 1
    base = face_warp_error(guide, guide).value
    painted, visible = [f.copy() for f in guide], [f.copy() for f in guide]
    rng = np.random.default_rng(2)
    left = 20 + step * 3
    painted[3][60:100, left - 8:left - 2] = rng.integers(0, 256, (40, 6, 3))
    visible[3][0:40, 100:106] = rng.integers(0, 256, (40, 6, 3))  # the same garbage on static background
    gain_painted = face_warp_error(painted, guide).value - base
    gain_visible = face_warp_error(visible, guide).value - base
    assert gain_visible > 0.2 and gain_painted < 0.02 * gain_visible


def test_mismatched_inputs_raise_one_line_errors():
    frames = _pan(4)
    with pytest.raises(ValueError, match="outputs have 3 frames and the guide 4") as err:
        face_warp_error(frames[:3], frames)
    assert "\n" not in str(err.value)
    small = [f[:100] for f in frames]
    with pytest.raises(ValueError, match="outputs frame 0 is 128x100"):
        face_warp_error(small, frames)
    with pytest.raises(ValueError, match="boxes are given for 2 frames"):
        face_warp_error(frames, frames, [np.zeros((0, 4))] * 2)
