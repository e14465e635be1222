"""Face tracks across video frames (honestface.video.tracks) and temporal landmark smoothing (.smoothing).

Synthetic detections check the linking rule (IoU, gaps, identity over IoU, cuts, veto, min_length) and the
smoothing filters; one test links real MTCNN detections and dlib embeddings of shifted, zoomed and mirrored crops of
insightface's t1.jpg group photo.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from honestface.data.samples import group_t1
from honestface.face.types import FaceDetection
from honestface.video import SMOOTHING_METHODS, FaceTrack, link_tracks, smooth_points, smooth_track

# five points of a 1 x 1 face centred at 0 (eyes, nose, mouth corners), scaled by the face size
_FIVE = np.array([[-0.2, -0.15], [0.2, -0.15], [0.0, 0.05], [-0.15, 0.25], [0.15, 0.25]])


def _face(cx: float, cy: float, size: float = 100.0, person: int = 0, jitter: float = 0.0, rng=None) -> FaceDetection:
    noise = rng.normal(0, jitter, (6, 2)) if jitter else np.zeros((6, 2))
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]) + noise[0].repeat(2)
    points = np.array([cx, cy]) + size * _FIVE + noise[1:]
    return FaceDetection(box=box, score=0.99, points5=points, extra={"person": person})


def _embeddings(frames: list[list[FaceDetection]], dim: int = 32, noise: float = 0.05, seed: int = 0):
    """One unit embedding per person plus noise, for every detection (by its extra['person'])."""
    rng = np.random.default_rng(seed)
    people = rng.normal(size=(10, dim))
    out = []
    for dets in frames:
        rows = [people[d.extra["person"]] + noise * rng.normal(size=dim) for d in dets]
        out.append([(r / np.linalg.norm(r)).astype(np.float32) for r in rows])
    return out


def _people(track: FaceTrack) -> list[int]:
    return [d.extra["person"] for d in track.detections]


# ------------------------------------------------------------------------------------------------ linking
def test_two_moving_jittery_faces_stay_two_tracks_with_stable_ids():
    rng = np.random.default_rng(1)
    frames = []
    for t in range(30):
        dets = [_face(100 + 4 * t, 100 + 2 * t, person=0, jitter=2, rng=rng),
                _face(600 - 3 * t, 300, size=80, person=1, jitter=2, rng=rng)]
        frames.append(dets if t == 0 or rng.random() < 0.5 else dets[::-1])  # detector order varies
    tracks = link_tracks(frames)
    assert [t.id for t in tracks] == [0, 1]
    assert [_people(t) for t in tracks] == [[0] * 30, [1] * 30]  # ids in order of first appearance
    assert all(t.frames == list(range(30)) for t in tracks)
    assert tracks[0].boxes().shape == (30, 4) and tracks[1].points5().shape == (30, 5, 2)


@pytest.mark.parametrize("missing, expected_tracks", [(3, 1), (5, 1), (6, 2)])
def test_a_face_absent_up_to_max_gap_frames_keeps_its_track(missing, expected_tracks):
    frames = [[] if 10 <= t < 10 + missing else [_face(200 + t, 200)] for t in range(25)]
    tracks = link_tracks(frames, max_gap=5)
    assert len(tracks) == expected_tracks
    if expected_tracks == 1:
        assert tracks[0].frames == [t for t in range(25) if not 10 <= t < 10 + missing]
        assert tracks[0].index(9) == 9 and tracks[0].index(10) is None and tracks[0].index(10 + missing) == 10
    else:
        assert tracks[0].frames == list(range(10)) and tracks[1].frames[0] == 10 + missing


def test_crossing_faces_keep_their_identity_when_one_hides_the_other():
    # A walks right, B walks left on the same line; at the crossing A hides B for frames 9..11
    frames = []
    for t in range(21):
        a, b = _face(100 + 20 * t, 200, person=0), _face(500 - 20 * t, 200, person=1)
        frames.append([a] if 9 <= t <= 11 else [a, b])
    embeddings = _embeddings(frames)
    tracks = link_tracks(frames, embeddings, identity_threshold=0.5)
    assert [_people(t) for t in tracks] == [[0] * 21, [1] * 18]
    assert tracks[1].frames == [t for t in range(21) if not 9 <= t <= 11]
    # IoU only: the constant-velocity prediction carries B's box on through the crossing, so B rejoins its track
    iou_only = link_tracks(frames, embeddings)
    assert [_people(t) for t in iou_only] == [[0] * 21, [1] * 18]
    # IoU only without motion (documented): B's track, last seen where A now is, takes A's box after the crossing
    # (a swap) and B starts a new track
    still = link_tracks(frames, embeddings, motion=False)
    assert [_people(t) for t in still] == [[0] * 12, [1] * 9 + [0] * 9, [1] * 9]


def test_motion_prediction_links_a_fast_pan():
    # a 50 px face moving 20 px, then 35 px per frame: its last box overlaps the next one by IoU 0.18 only
    frames = [[_face(100 + 35 * t - 15 * (t > 0), 200, size=50)] for t in range(12)]
    assert len(link_tracks(frames)) == 1
    assert len(link_tracks(frames, motion=False)) > 1


def test_a_new_face_moves_with_the_camera_pan_from_its_first_frame():
    # the camera pans 20 px, then 35 px per frame; a face entering on frame 5 links on frame 6 through the other
    # tracks' drift (its own box moved 35 px: IoU 0.18)
    x = [35 * t - 15 * (t > 0) for t in range(12)]
    frames = [[_face(100 + x[t], 200, size=50, person=0), _face(100 + x[t], 400, size=50, person=1)]
              + ([_face(40 + x[t], 300, size=50, person=2)] if t >= 5 else []) for t in range(12)]
    tracks = link_tracks(frames)
    assert [_people(t) for t in tracks] == [[0] * 12, [1] * 12, [2] * 7]


def test_identity_wins_over_iou_when_two_people_swap_places():
    frames = [[_face(200, 200, person=0), _face(330, 200, person=1)] for _ in range(10)]
    frames += [[_face(330, 200, person=0), _face(200, 200, person=1)] for _ in range(10)]  # they swap
    embeddings = _embeddings(frames)
    tracks = link_tracks(frames, embeddings, identity_threshold=0.5, iou_threshold=0.1)
    assert [_people(t) for t in tracks] == [[0] * 20, [1] * 20]
    iou_only = link_tracks(frames, embeddings, iou_threshold=0.1)  # boxes overlap (IoU 0.6): the ids swap
    assert [_people(t) for t in iou_only] == [[0] * 10 + [1] * 10, [1] * 10 + [0] * 10]


def test_a_cut_rejoins_the_track_by_identity_only():
    frames = [[_face(150, 150, person=0)] for _ in range(10)] + [[_face(900, 600, person=0)] for _ in range(10)]
    embeddings = _embeddings(frames)
    assert [len(t) for t in link_tracks(frames, embeddings, identity_threshold=0.5)] == [20]
    assert [len(t) for t in link_tracks(frames)] == [10, 10]
    assert [len(t) for t in link_tracks(frames, embeddings)] == [10, 10]  # embeddings alone: stored, not used
    other = [[_face(150, 150, person=0)] for _ in range(10)] + [[_face(900, 600, person=1)] for _ in range(10)]
    assert [len(t) for t in link_tracks(other, _embeddings(other), identity_threshold=0.5)] == [10, 10]


def test_identity_veto_splits_a_cut_to_another_person_at_the_same_place():
    frames = [[_face(300, 300, person=0)] for _ in range(8)] + [[_face(305, 300, person=1)] for _ in range(8)]
    embeddings = _embeddings(frames)
    assert [_people(t) for t in link_tracks(frames, embeddings, identity_threshold=0.5)] == [[0] * 8 + [1] * 8]
    vetoed = link_tracks(frames, embeddings, identity_threshold=0.5, identity_veto=0.3)
    assert [_people(t) for t in vetoed] == [[0] * 8, [1] * 8]
    with pytest.raises(ValueError, match="identity_veto"):
        link_tracks(frames, embeddings, identity_veto=0.3)


def test_min_length_drops_short_tracks_and_ids_stay_contiguous():
    frames = [[_face(100, 100, person=0)] + ([_face(500, 500, person=1)] if t in (2, 3) else [])
              + ([_face(800, 200, person=2)] if t >= 4 else []) for t in range(10)]
    assert [_people(t)[0] for t in link_tracks(frames)] == [0, 1, 2]
    tracks = link_tracks(frames, min_length=3)
    assert [(t.id, _people(t)[0], len(t)) for t in tracks] == [(0, 0, 10), (1, 2, 6)]


def test_bad_inputs_raise_one_clear_error():
    frames = [[_face(100, 100)], [_face(100, 100)]]
    with pytest.raises(ValueError, match="1 detections but 2 embeddings"):
        link_tracks(frames, [[np.ones(4)], [np.ones(4), np.ones(4)]], identity_threshold=0.5)
    with pytest.raises(TypeError, match="FaceDetection"):
        link_tracks([[np.zeros(4)]])
    with pytest.raises(ValueError, match="points5"):
        link_tracks([[FaceDetection(box=np.array([0, 0, 10, 10.0]), score=1.0)]])[0].points5()


def test_track_round_trips_through_json_and_keeps_only_json_data():
    det = _face(120, 80, person=3)
    det.extra.update(landmarks=np.arange(136, dtype=np.float32).reshape(68, 2) / 7, landmark_scheme="dlib68",
                     rect=object(), level=np.int64(2))
    nopts = FaceDetection(box=np.array([1.5, 2, 30, 40]), score=0.5)
    emb = np.random.default_rng(0).normal(size=16).astype(np.float32)
    emb /= np.linalg.norm(emb)
    track = FaceTrack(id=4, frames=[3, 7], detections=[det, nopts], embeddings=[emb, None])
    back = FaceTrack.from_dict(json.loads(json.dumps(track.to_dict(), allow_nan=False)))
    assert (back.id, back.frames, back.embeddings[1]) == (4, [3, 7], None)
    assert back.embeddings[0].dtype == np.float32 and np.array_equal(back.embeddings[0], emb)
    np.testing.assert_array_equal(back.boxes(), track.boxes())
    restored = back.detections[0]
    assert restored.score == det.score and np.array_equal(restored.points5, det.points5)
    assert restored.extra["landmarks"].dtype == np.float32
    np.testing.assert_array_equal(restored.extra["landmarks"], det.extra["landmarks"])
    assert {k: v for k, v in restored.extra.items() if k != "landmarks"} == {
        "person": 3, "landmark_scheme": "dlib68", "level": 2}  # the object is dropped
    assert back.detections[1].points5 is None
    np.testing.assert_allclose(back.mean_embedding(), emb, atol=1e-6)
    with pytest.raises(ValueError, match="strictly increasing"):
        FaceTrack(id=0, frames=[2, 2], detections=[det, det], embeddings=[None, None])


# ---------------------------------------------------------------------------------------------- smoothing
def _line(n: int = 60, frames=None):
    f = np.arange(n) if frames is None else np.asarray(frames)
    base = np.array([300.0, 200.0]) + 80 * _FIVE  # (5, 2)
    return f, base + f[:, None, None] * np.array([2.5, -1.0])  # straight-line motion


def test_gaussian_reproduces_straight_motion_exactly_even_at_the_ends_and_small_gaps():
    for frames in (None, [*range(20), *range(23, 40)]):  # a 3-frame gap (< max_gap) is bridged
        f, pts = _line(frames=frames)
        np.testing.assert_allclose(smooth_points(f, pts, "gaussian", sigma=1.5), pts, atol=1e-9)


def test_gaussian_reduces_jitter_rms_by_at_least_two_in_the_middle():
    rng = np.random.default_rng(0)
    f = np.arange(200)
    pts = rng.uniform(0, 500, (1, 300, 2)) + f[:, None, None] * np.array([2.5, -1.0])  # 300 points in a line
    noisy = pts + rng.normal(0, 1.0, pts.shape)
    out = smooth_points(f, noisy, "gaussian", sigma=1.5)

    def rms(a, b):
        return float(np.sqrt(np.mean((a - b) ** 2)))

    assert rms(out[5:-5], pts[5:-5]) < rms(noisy[5:-5], pts[5:-5]) / 2  # theory: x0.44 for sigma 1.5
    assert rms(out[-1], pts[-1]) < 0.95 * rms(noisy[-1], pts[-1])  # the ends are smoothed less (theory: x0.85)


def test_constant_points_stay_unchanged_and_none_is_a_copy():
    f = np.array([0, 1, 2, 5, 6, 9])
    pts = np.broadcast_to(np.array([10.0, 20.0]) + 50 * _FIVE, (6, 5, 2)).copy()
    for method in SMOOTHING_METHODS:
        np.testing.assert_allclose(smooth_points(f, pts, method, beta=0.5), pts, atol=1e-9)
    noisy = pts + np.random.default_rng(0).normal(0, 1, pts.shape)
    out = smooth_points(f, noisy, "none")
    assert out is not noisy and np.array_equal(out, noisy)
    assert np.array_equal(smooth_points(f, noisy, "gaussian", sigma=0), noisy)
    assert np.array_equal(smooth_points([4], noisy[:1], "gaussian"), noisy[:1])
    assert np.array_equal(smooth_points([4], noisy[:1], "one_euro"), noisy[:1])


@pytest.mark.parametrize("method", ["gaussian", "one_euro"])
def test_long_gaps_are_not_smoothed_across(method):
    f = np.array([*range(10), *range(20, 30)])
    pts = np.where(f[:, None, None] < 10, 0.0, 50.0) + 40 * _FIVE  # the face moved while it was gone
    np.testing.assert_allclose(smooth_points(f, pts, method, sigma=5.0, max_gap=5), pts, atol=1e-9)
    assert not np.allclose(smooth_points(f, pts, method, sigma=5.0, max_gap=10), pts, atol=1e-3)


def test_one_euro_is_causal_smooths_and_is_scale_free():
    f, pts = _line(80)
    noisy = pts + np.random.default_rng(0).normal(0, 1.0, pts.shape)
    out = smooth_points(f, noisy, "one_euro", min_cutoff=1.0, beta=0.3, fps=25)
    changed = noisy.copy()
    changed[40] += 25.0
    out2 = smooth_points(f, changed, "one_euro", min_cutoff=1.0, beta=0.3, fps=25)
    np.testing.assert_array_equal(out2[:40], out[:40])
    assert not np.allclose(out2[40:], out[40:])
    still = np.broadcast_to(pts[0], pts.shape) + (noisy - pts)  # jitter on a face at rest
    assert np.std(smooth_points(f, still, "one_euro")[10:] - pts[0]) < np.std(still - pts[0]) / 2
    # beta acts on the speed in face sizes per second: a 3x larger face (and motion) gives a 3x output
    np.testing.assert_allclose(smooth_points(f, 3 * noisy, "one_euro", beta=0.3), 3 * out, rtol=1e-9, atol=1e-9)


def test_smoothing_bad_input_and_smooth_track():
    f, pts = _line(10)
    with pytest.raises(ValueError, match="none, gaussian, one_euro"):
        smooth_points(f, pts, "kalman")
    with pytest.raises(ValueError, match="strictly increasing"):
        smooth_points(f[::-1], pts)
    with pytest.raises(ValueError, match="NaN"):
        smooth_points(f, np.where(f[:, None, None] == 3, np.nan, pts))
    track = FaceTrack(id=0, frames=list(f), detections=[FaceDetection(box=np.zeros(4), score=1.0, points5=p)
                                                       for p in pts], embeddings=[None] * 10)
    np.testing.assert_allclose(smooth_track(track, "gaussian", sigma=2.0), pts, atol=1e-9)


# ------------------------------------------------------------------------------------------- real image
@pytest.mark.usefixtures("one_thread")  # MTCNN on a shared 2-core CPU: threads oversubscribe
def test_real_group_photo_people_keep_one_track_each_across_shifts_zooms_and_a_mirror_cut():
    from honestface.face import build_detector, build_identity_encoder

    photo = group_t1()  # six people
    height, width = photo.shape[:2]
    detector, encoder = build_detector("mtcnn"), build_identity_encoder("dlib")
    views = [(1.0, 0, 0, False), (0.95, 24, 12, False),  # (zoom, dx, dy, mirrored): a pan and zoom,
             (0.95, 24, 12, True), (0.92, 40, 20, True)]  # then a cut to a mirrored shot
    frames, detections, embeddings = [], [], []
    for zoom, dx, dy, mirrored in views:
        w, h = int(width * zoom), int(height * zoom)
        view = np.asarray(Image.fromarray(photo[dy:dy + h, dx:dx + w]).resize((640, round(640 * h / w))))
        view = np.ascontiguousarray(view[:, ::-1]) if mirrored else view
        dets = detector.detect(view)
        for d in dets:  # the person: the photo face nearest to this box's centre mapped back to the photo
            cx, cy = d.center
            cx = 640 - cx if mirrored else cx
            d.extra["photo_xy"] = (dx + cx * w / 640, dy + cy * w / 640)
        frames.append(view)
        detections.append(dets)
        embeddings.append(list(encoder.embed_image(view, dets)) if dets else [])
    first = np.array([d.extra["photo_xy"] for d in detections[0]])
    assert len(first) >= 5
    for dets in detections:
        for d in dets:
            dist = np.linalg.norm(first - np.array(d.extra["photo_xy"]), axis=1)
            assert dist.min() < 50, "a detection maps to no face of frame 0"  # faces are > 300 px apart
            d.extra["person"] = int(dist.argmin())

    tracks = link_tracks(detections, embeddings, identity_threshold=0.95, identity_veto=0.9)
    assert len(tracks) == len(first)
    assert all(len(set(_people(t))) == 1 for t in tracks)  # nobody switches track
    assert sorted(_people(t)[0] for t in tracks) == list(range(len(first)))
    assert all(len(t) >= 3 for t in tracks)  # the mirror cut did not end anyone's track
    assert len(link_tracks(detections)) > len(first)  # IoU alone cannot follow the people through the cut
