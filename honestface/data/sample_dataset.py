"""A tiny reference-based face dataset made from the photos bundled with installed packages (offline).

Each face of `samples.SAMPLES` photos becomes one identity folder: its FFHQ-aligned crop (`0.png`) plus `views - 1`
augmented views of it (`honestface.data.views`; mirrored views only with `flip=True`, their landmarks then swap
sides by the scheme's mirror permutation) standing in for other photos of the same person; every image has a
landmark sidecar (the views' landmarks follow their jitter). Used by the quickstart and by tests; real training uses `scripts/prepare_data.py align`. `build_sample_split` makes the
quickstart's identity-disjoint train / held-out test sets (our choice of held-out people: one face of the t1 group
photo and Tom Hanks, faces the recipe never trains on).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from honestface.io import atomic_write_text

PHOTOS = ("astronaut", "grace_hopper", "group_t1")


def build_sample_identities(output: str | os.PathLike, size: int = 512, views: int = 4, seed: int = 0,
                            photos: tuple[str, ...] = PHOTOS, detector: str = "mtcnn", flip: bool = False,
                            unflipped: tuple[str, ...] = ()) -> list[str]:
    """Write `output/<photo>_<i>/{0..views-1}.png` (+ `.json` sidecars); returns the identity names.

    flip: mirror about half of the augmented views (landmarks and 5 points follow, sides swapped), except for the
    identities in `unflipped`, whose views are then the same as with flip=False (the held-out faces of a split).

    Existing folders are rewritten, so the result depends only on the arguments.
    """
    from honestface.data.samples import load_sample
    from honestface.data.sidecar import write_sidecar
    from honestface.data.views import augmented_views
    from honestface.face import build_detector, build_landmarker, extract_faces, transform_points
    from honestface.face.schemes import FIVE, get_scheme
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
            jittered = augmented_views(face.crop, views - 1, seed=seed * 7919 + len(names),
                                       flip=flip and name not in unflipped,
                                       return_matrices=True)
            identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            for j, (crop, m) in enumerate([(face.crop, identity), *jittered]):
                path = write_image(out / name / f"{j}.png", crop, overwrite=True)
                landmarks, points5 = transform_points(face.crop_landmarks, m), transform_points(face.points5, m)
                if np.linalg.det(m[:, :2]) < 0:  # a mirrored view
                    landmarks, points5 = get_scheme(face.scheme).swap_sides(landmarks), FIVE.swap_sides(points5)
                write_sidecar(path, {"scheme": face.scheme, "landmarks": landmarks,
                                     "points5": points5, "size": [size, size],
                                     "source": photo, "view_of": "0.png" if j else None})
            names.append(name)
    return names


ALL_PHOTOS = (*PHOTOS, "tom_hanks_aligned")
DEFAULT_TEST_IDENTITIES = ("group_t1_4", "tom_hanks_aligned_0")


@dataclass
class SampleSplit:
    """Folders of `build_sample_split`: identity layout `<identity>/<view>.png` everywhere.

    train: training identities (HQ views + sidecars); test_hq / test_lq: the held-out identities' views and their
    fixed degraded copies (same relative paths); each test face's references are the other views of its person.
    """

    root: Path
    train: Path
    test_hq: Path
    test_lq: Path
    train_identities: list[str]
    test_identities: list[str]

    def references(self, face: str | os.PathLike) -> list[Path]:
        """The other views of the person of test face `face` (a path or `<identity>/<view>.png`)."""
        from honestface.io import list_images

        rel = Path(face).relative_to(self.test_hq) if Path(face).is_absolute() else Path(face)
        return [p for p in list_images(self.test_hq / rel.parent, recursive=False) if p.name != rel.name]


def build_sample_split(output: str | os.PathLike, size: int = 64, train_views: int = 8, test_views: int = 4,
                       test_identities: tuple[str, ...] = DEFAULT_TEST_IDENTITIES, preset: str = "daefr",
                       seed: int = 0, detector: str = "mtcnn",
                       exclude_identities: tuple[str, ...] = (), flip: bool = False) -> SampleSplit:
    """Identity-disjoint train / test faces from every bundled photo (astronaut, Grace Hopper, t1's six people,
    Tom Hanks): `output/faces/<identity>/` (crop 0 + `train_views - 1` augmented views) for training identities,
    `output/test/hq/<identity>/` (`test_views` views) and their degraded copies `output/test/lq/...` (preset
    `preset`, seed `seed`; `honestface.data.prepare.make_testset`). `flip`: mirrored views among the training
    people's augmented views (`build_sample_identities`; the test faces stay those of flip=False, so runs with and
    without flips are scored on the same faces). `exclude_identities` are left out entirely
    (neither trained on nor tested): a validation split holds out the real test people this way
    (`honestface.apps.quickstart.levers`). Rerunning with the same arguments is cheap."""
    from honestface.data.prepare import make_testset

    out = Path(output)
    views = max(train_views, test_views)
    stamp = out / "split.json"
    settings = {"size": size, "train_views": train_views, "test_views": test_views,
                "test_identities": list(test_identities), "preset": preset, "seed": seed, "detector": detector}
    if exclude_identities:
        settings["exclude_identities"] = list(exclude_identities)
    if flip:
        settings["flip"] = True
    if set(test_identities) & set(exclude_identities):  # checked before any face is detected
        raise ValueError("an identity cannot be both tested and excluded")
    if not (stamp.is_file() and json.loads(stamp.read_text()).get("settings") == settings):
        if out.exists():
            shutil.rmtree(out)
        staging = out / "all"
        names = build_sample_identities(staging, size=size, views=views, seed=seed, photos=ALL_PHOTOS,
                                        detector=detector, flip=flip, unflipped=tuple(test_identities))
        unknown = sorted((set(test_identities) | set(exclude_identities)) - set(names))
        problem = (f"unknown identity {unknown[0]!r}; the bundled identities are: {', '.join(names)}" if unknown
                   else "keep at least two bundled identities for training"
                   if len(set(names) - set(test_identities) - set(exclude_identities)) < 2 else None)
        if problem:
            shutil.rmtree(out)  # no half-built folder
            raise ValueError(problem)
        names = [n for n in names if n not in exclude_identities]
        for name in names:
            test = name in test_identities
            keep = test_views if test else train_views
            dest = out / ("test/hq" if test else "faces") / name
            dest.mkdir(parents=True)
            for j in range(keep):
                for suffix in (".png", ".json"):
                    os.replace(staging / name / f"{j}{suffix}", dest / f"{j}{suffix}")
        shutil.rmtree(staging)  # with the excluded identities' crops
        make_testset(out / "test/hq", out / "test/pairs", preset=preset, seed=seed, size=size)
        os.replace(out / "test/pairs/lq", out / "test/lq")
        shutil.rmtree(out / "test/pairs")
        atomic_write_text(stamp, json.dumps({"settings": settings, "identities": names}, indent=1))
    names = json.loads(stamp.read_text())["identities"]
    return SampleSplit(root=out, train=out / "faces", test_hq=out / "test/hq", test_lq=out / "test/lq",
                       train_identities=[n for n in names if n not in test_identities],
                       test_identities=[n for n in names if n in test_identities])
