"""extract_faces: photo -> aligned crops with matrices and landmarks in both frames."""

from __future__ import annotations

import numpy as np
import pytest

from honestface.data.samples import astronaut, group_t1
from honestface.face import build_detector, build_landmarker, extract_faces, template, transform_points


@pytest.fixture(scope="module")
def tools():
    return build_detector("mtcnn", threshold=0.9), build_landmarker("dlib68")


def test_astronaut_crop_matches_template_and_landmarks_follow(tools):
    detector, landmarker = tools
    faces = extract_faces(astronaut(), detector, landmarker, size=256, rule="largest")
    assert len(faces) == 1
    face = faces[0]
    assert face.crop.shape == (256, 256, 3) and face.crop.dtype == np.uint8
    # The five points land on the FFHQ template (least-squares similarity: small residual only).
    assert np.abs(face.points5 - template("ffhq", 256)).max() < 6
    # Crop landmarks are the photo landmarks under the same matrix, and lie inside the crop.
    np.testing.assert_allclose(face.crop_landmarks, transform_points(face.landmarks, face.matrix))
    assert face.crop_landmarks.min() > 0 and face.crop_landmarks.max() < 256
    assert face.scheme == "dlib68"


def test_group_photo_gives_six_faces_and_no_face_gives_none(tools):
    detector, landmarker = tools
    faces = extract_faces(group_t1(), detector, landmarker, size=128)
    assert len(faces) == 6
    assert len({tuple(np.round(f.detection.box)) for f in faces}) == 6
    assert extract_faces(np.full((200, 200, 3), 128, np.uint8), detector, landmarker) == []


def test_without_landmarker_uses_detector_points(tools):
    detector, _ = tools
    faces = extract_faces(astronaut(), detector, None, size=112, template="arcface")
    assert len(faces) == 1 and faces[0].landmarks is None and faces[0].crop.shape == (112, 112, 3)
    residual = np.linalg.norm(faces[0].points5 - template("arcface", 112), axis=1)  # (5,) px
    assert residual[:2].max() < 3 and residual.max() < 8  # eyes tight; the smiling mouth deviates more


def test_rotated_face_is_found_and_aligned_upright(tools):
    import cv2

    detector, landmarker = tools
    img = astronaut()
    rot = cv2.warpAffine(img, cv2.getRotationMatrix2D((256, 256), 30, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT)
    faces = extract_faces(rot, detector, landmarker, size=256, rule="largest")
    assert len(faces) == 1
    left_eye, right_eye = faces[0].points5[:2]
    assert abs(left_eye[1] - right_eye[1]) < 4  # eyes level again in the crop
    upright = extract_faces(img, detector, landmarker, size=256, rule="largest")[0]
    assert np.abs(faces[0].crop.astype(float) - upright.crop.astype(float)).mean() < 20
