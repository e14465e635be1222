"""A tiny reference-based face dataset made from the photos bundled with installed packages (offline).

Each face of `samples.SAMPLES` photos becomes one identity folder: its FFHQ-aligned crop (`0.png`) plus `views - 1`
augmented views of it (`honestface.data.views`, no flips) standing in for other photos of the same person; every
image has a landmark sidecar (the views' landmarks follow their jitter). Used by the quickstart and by tests; real training uses `scripts/prepare_data.py align`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "grace_hopper", "group_t1")


def build_sample_identities(output: str | os.PathLike, size: int = 512, views: int = 4, seed: int = 0,
                            photos: tuple[str, ...] = PHOTOS, detector: str = "mtcnn") -> list[str]:
    """Write `output/<photo>_<i>/{0..views-1}.png` (+ `.json` sidecars); returns the identity names.

    Existing folders are rewritten, so the result depends only on the arguments.
    """
    from honestface.data.samples import load_sample
    from honestface.data.sidecar import write_sidecar
    from honestface.data.views import augmented_views
    from honestface.face import build_detector, build_landmarker, extract_faces, transform_points
    from honestface.io import write_image

    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    out = Path(output)
    det = build_detector(detector, threshold=0.9) if detector == "mtcnn" else build_detector(detector)
    landmarker = build_landmarker("dlib68")
    names = []
    for photo in photos:
        for i, face in enumerate(extract_faces(load_sample(photo), det, landmarker, size=size)):
            name = f"{photo}_{i}"
            jittered = augmented_views(face.crop, views - 1, seed=seed * 7919 + len(names), flip=False,
                                       return_matrices=True)
            identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            for j, (crop, m) in enumerate([(face.crop, identity), *jittered]):
                path = write_image(out / name / f"{j}.png", crop, overwrite=True)
                write_sidecar(path, {"scheme": face.scheme, "landmarks": transform_points(face.crop_landmarks, m),
                                     "points5": transform_points(face.points5, m), "size": [size, size],
                                     "source": photo, "view_of": "0.png" if j else None})
            names.append(name)
    return names
