"""Datasets: paired HQ/LQ folders, identity-folder references, inference inputs, bad files, collation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from honestface.data.datasets import PairedFaceDataset, collate_faces
from honestface.data.references import (
    InferenceFolderDataset,
    ReferenceFaceDataset,
    read_split_file,
    split_identities,
    write_split_file,
)
from honestface.data.samples import astronaut, grace_hopper
from honestface.data.sidecar import write_sidecar


@pytest.fixture(scope="module")
def faces() -> list[np.ndarray]:
    """Twelve different 64x64 uint8 face-ish crops of the bundled photos."""
    out = []
    for photo, boxes in ((astronaut(), [(150, 20), (170, 40), (130, 10)]), (grace_hopper(), [(130, 60), (150, 90)])):
        for x, y in boxes:
            crop = Image.fromarray(photo[y:y + 160, x:x + 160]).resize((64, 64), Image.BICUBIC)
            out += [np.asarray(crop), np.asarray(crop)[:, ::-1]]
    out += [np.full((64, 64, 3), v, np.uint8) for v in (40, 200)]
    return out


def save(path: Path, image: np.ndarray, size: tuple[int, int] | None = None) -> Path:
    """Write an RGB uint8 image (optionally resized to size=(w, h)) as a PNG/JPEG file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(image)
    if size is not None:
        im = im.resize(size, Image.BICUBIC)
    im.save(path)
    return path


def identity_tree(root: Path, faces: list[np.ndarray], counts: dict[str, int]) -> dict[str, list[Path]]:
    """root/<identity>/<i>.png with counts[identity] images ("nested" ones go one level deeper)."""
    out, k = {}, 0
    for ident, n in counts.items():
        sub = root / ident / ("session1" if ident.startswith("nested") else "")
        out[ident] = [save(sub / f"{i:02d}.png", faces[(k + i) % len(faces)]) for i in range(n)]
        k += n
    return out


# --------------------------------------------------------------------------------------------- paired dataset


def test_paired_nested_sizes_and_ranges(tmp_path: Path, faces: list[np.ndarray]) -> None:
    save(tmp_path / "a" / "b" / "00000.png", faces[0])
    big = save(tmp_path / "a" / "00001.png", faces[1], size=(192, 192))
    save(tmp_path / "00002.jpg", faces[2], size=(48, 48))
    wide = np.zeros((64, 80, 3), np.uint8)
    wide[:, 8:72] = faces[3]  # the centre 64 columns hold a face, the margins are black
    save(tmp_path / "c" / "00003.png", wide)
    ds = PairedFaceDataset(tmp_path, resolution=64)
    assert len(ds) == 4 and [p.name for p in ds.paths] == ["00002.jpg", "00001.png", "00000.png", "00003.png"]
    for i in range(len(ds)):
        s = ds[i]
        assert s["hq"].shape == (3, 64, 64) and s["hq"].dtype == torch.float32
        assert 0.0 <= s["hq"].min() and s["hq"].max() <= 1.0 and "lq" not in s and s["index"] == i
    # the 192 px file is shrunk by 3x3 area averaging, the non-square one centre-cropped (no resize at 64)
    src = np.asarray(Image.open(big), dtype=np.float32) / 255.0
    area = src.reshape(64, 3, 64, 3, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    torch.testing.assert_close(ds[ds.paths.index(big)]["hq"], torch.from_numpy(area), atol=1e-5, rtol=0)
    torch.testing.assert_close(ds[3]["hq"], torch.from_numpy(faces[3].transpose(2, 0, 1) / 255.0).float())
    assert len(PairedFaceDataset(tmp_path, resolution=64, recursive=False)) == 1
    with pytest.raises(IndexError):
        ds[4]


def test_precomputed_lq_folder_and_missing_lq(tmp_path: Path, faces: list[np.ndarray]) -> None:
    hq, lq = tmp_path / "hq", tmp_path / "lq"
    for i, rel in enumerate(["x/0.png", "x/1.png", "2.png"]):
        save(hq / rel, faces[i])
        save((lq / rel).with_suffix(".jpg"), faces[10 + i % 2], size=(16, 16))  # other extension, 4x smaller
    ds = PairedFaceDataset(hq, resolution=64, lq_root=lq)
    for i in range(3):
        s = ds[i]
        assert s["lq"].shape == (3, 64, 64)
        expected = faces[10 + [2, 0, 1][i] % 2].mean() / 255.0  # sorted order: 2.png, x/0.png, x/1.png
        assert abs(s["lq"].mean().item() - expected) < 0.02
    (lq / "x" / "1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"hq/x/1\.png"):
        PairedFaceDataset(hq, resolution=64, lq_root=lq)


def test_sidecar_landmarks_follow_crop_and_resize(tmp_path: Path, faces: list[np.ndarray]) -> None:
    img = np.zeros((128, 160, 3), np.uint8)  # non-square: 16 px cropped on each side, then 128 -> 64
    img[:, 16:144] = np.asarray(Image.fromarray(faces[0]).resize((128, 128)))
    path = save(tmp_path / "f.png", img)
    pts = np.array([[20.0, 30.0], [100.0, 60.0], [143.0, 127.0]])
    write_sidecar(path, {"scheme": "dlib68", "landmarks": pts, "points5": pts[[0, 1, 2, 0, 1]], "size": [128, 160]})
    s = PairedFaceDataset(tmp_path, resolution=64)[0]
    expected = np.stack([(pts[:, 0] - 16 + 0.5) * 0.5 - 0.5, (pts[:, 1] + 0.5) * 0.5 - 0.5], axis=1)
    np.testing.assert_allclose(s["landmarks"].numpy(), expected, atol=1e-5)
    assert s["points5"].shape == (5, 2) and s["scheme"] == "dlib68"
    # a sidecar written for the 2x larger original of the same crop is brought to this file's pixels first
    write_sidecar(path, {"landmarks": 2 * pts + 0.5, "size": [256, 320]})
    s = PairedFaceDataset(tmp_path, resolution=64)[0]
    np.testing.assert_allclose(s["landmarks"].numpy(), expected, atol=1e-5)
    assert "scheme" not in s and "landmarks" not in PairedFaceDataset(tmp_path, 64, with_sidecar=False)[0]


def test_collate_mixed_sidecars(tmp_path: Path, faces: list[np.ndarray]) -> None:
    paths = [save(tmp_path / f"{i}.png", faces[i]) for i in range(3)]
    write_sidecar(paths[0], {"scheme": "dlib68", "landmarks": np.full((68, 2), 10.0)})
    write_sidecar(paths[2], {"scheme": "five", "landmarks": np.full((5, 2), 20.0), "points5": np.ones((5, 2))})
    ds = PairedFaceDataset(tmp_path, resolution=64)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_faces)))
    assert batch["hq"].shape == (3, 3, 64, 64) and batch["index"].tolist() == [0, 1, 2]
    assert batch["landmarks"].shape == (3, 68, 2) and batch["has_landmarks"].tolist() == [True, False, True]
    assert torch.isnan(batch["landmarks"][1]).all() and torch.isnan(batch["landmarks"][2, 5:]).all()
    assert (batch["landmarks"][2, :5] == 20.0).all() and not torch.isnan(batch["landmarks"][0]).any()
    assert batch["has_points5"].tolist() == [False, False, True] and batch["scheme"] == ["dlib68", None, "five"]
    assert batch["path"] == [str(p) for p in paths]


def test_degradation_is_seeded_by_seed_index_epoch(tmp_path: Path, faces: list[np.ndarray]) -> None:
    from honestface.data.degradation import Degradation, sample_seed

    for i in range(3):
        save(tmp_path / f"{i}.png", faces[i])
    a = PairedFaceDataset(tmp_path, resolution=64, degradation=Degradation("daefr"), seed=7)
    b = PairedFaceDataset(tmp_path, resolution=64, degradation=Degradation("daefr"), seed=7)
    s = a[1]
    assert s["lq"].shape == (3, 64, 64) and 0 <= s["lq"].min() and s["lq"].max() <= 1
    assert s["seed"] == sample_seed(7, 1, 0) and not torch.equal(s["lq"], s["hq"])
    assert torch.equal(s["lq"], b[1]["lq"]) and torch.equal(s["lq"], a[1]["lq"])
    other_seed = PairedFaceDataset(tmp_path, resolution=64, degradation=Degradation("daefr"), seed=8)
    assert not torch.equal(other_seed[1]["lq"], s["lq"])
    a.set_epoch(1)
    assert a[1]["seed"] == sample_seed(7, 1, 1) and not torch.equal(a[1]["lq"], b[1]["lq"])
    b.set_epoch(1)
    assert torch.equal(a[1]["lq"], b[1]["lq"])
    batch = collate_faces([a[0], a[1]])
    assert batch["lq"].shape == (2, 3, 64, 64) and all(v.shape == (2,) for v in batch["degradation"].values())
    gray = PairedFaceDataset(tmp_path, resolution=64, degradation=Degradation("daefr", gray_prob=1.0))[0]
    assert bool(gray["degradation"]["gray"]) and torch.allclose(gray["hq"][0], gray["hq"][2])  # target grayed too
    assert torch.allclose(gray["lq"][0], gray["lq"][2], atol=1 / 255)


# ------------------------------------------------------------------------------------------ bad files, errors


def test_bad_files_are_skipped_and_the_epoch_completes(tmp_path: Path, faces: list[np.ndarray]) -> None:
    for i in range(6):
        save(tmp_path / f"{i:02d}.png", faces[i])
    data = (tmp_path / "01.png").read_bytes()
    truncated = tmp_path / "02.png"
    truncated.write_bytes(data[: len(data) // 2])  # a valid header: only decoding finds the damage
    text = tmp_path / "03_notes.png"
    text.write_text("this is not an image")
    tiny = save(tmp_path / "04_tiny.png", faces[0], size=(8, 8))  # shorter side < 64 // 4
    with pytest.warns(UserWarning, match="03_notes.png") as record:
        ds = PairedFaceDataset(tmp_path, resolution=64)
    assert "04_tiny.png" in str(record[0].message) and len(ds) == 6  # 6 good + truncated, minus nothing else
    assert {p for p, _ in ds.skipped} == {str(text), str(tiny)}
    with pytest.warns(UserWarning, match="02.png"):
        batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_faces))
    assert sum(len(b["path"]) for b in batches) == len(ds)  # the epoch finished, the bad sample replaced
    assert str(truncated) not in {p for b in batches for p in b["path"]}
    assert [p for b in batches for p, _ in b.get("skipped", [])] == [str(truncated)]
    assert str(truncated) in {p for p, _ in ds.skipped}

    # the same through two worker processes: the report travels with the batches
    fresh = PairedFaceDataset(tmp_path, resolution=64, check_files=False)
    assert len(fresh) == 8 and not fresh.skipped
    loader = DataLoader(fresh, batch_size=2, num_workers=2, collate_fn=collate_faces)
    batches = list(loader)
    assert sum(len(b["path"]) for b in batches) == 8
    reported = {p for b in batches for p, _ in b.get("skipped", [])}
    assert {str(truncated), str(text), str(tiny)} <= reported


def test_empty_or_all_bad_folders_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(ValueError, match="no image files in .*nothing_here"):
        PairedFaceDataset(tmp_path / "nothing_here", resolution=64)
    (tmp_path / "only_junk").mkdir()
    (tmp_path / "only_junk" / "x.png").write_text("nope")
    with pytest.raises(ValueError, match="only_junk: all 1 files"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        PairedFaceDataset(tmp_path / "only_junk", resolution=64)
    with pytest.raises(FileNotFoundError, match="absent_folder"):
        PairedFaceDataset(tmp_path / "absent_folder", resolution=64)
    with pytest.raises(ValueError, match="no identity in"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ReferenceFaceDataset(tmp_path, resolution=64)


# ------------------------------------------------------------------------------------------ reference dataset


def test_references_exclude_target_respect_k_and_pad(tmp_path: Path, faces: list[np.ndarray]) -> None:
    tree = identity_tree(tmp_path, faces, {"alice": 6, "bob": 3, "carol": 1, "nested_dan": 3})
    with pytest.warns(UserWarning, match="carol"):
        ds = ReferenceFaceDataset(tmp_path, num_references=4, resolution=64, train=True, seed=3)
    assert ds.identities == ["alice", "bob", "nested_dan"] and len(ds) == 12
    for epoch in range(8):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            own = {str(p) for p in tree[s["identity"]]}
            assert s["path"] in own and s["path"] not in s["ref_paths"]
            assert set(s["ref_paths"]) <= own and len(set(s["ref_paths"])) == len(s["ref_paths"])
            n = min(4, len(own) - 1)
            assert s["refs"].shape == (4, 3, 64, 64) and s["ref_mask"].tolist() == [True] * n + [False] * (4 - n)
            assert len(s["ref_paths"]) == n and (s["refs"][n:] == 0).all() and (s["refs"][:n].amax((1, 2, 3)) > 0).all()
    batch = collate_faces([ds[0], ds[7]])
    assert batch["refs"].shape == (2, 4, 3, 64, 64) and batch["ref_mask"].shape == (2, 4)
    assert batch["identity"] == ["alice", "bob"]


def test_reference_choice_fixed_in_test_mode_and_varies_in_training(tmp_path: Path, faces: list[np.ndarray]) -> None:
    identity_tree(tmp_path, faces, {"alice": 8, "bob": 2})
    test = ReferenceFaceDataset(tmp_path, num_references=3, resolution=64, train=False)
    first = [test[i]["ref_paths"] for i in range(len(test))]
    test.set_epoch(5)
    assert [test[i]["ref_paths"] for i in range(len(test))] == first
    other = ReferenceFaceDataset(tmp_path, num_references=3, resolution=64, train=False, seed=99)
    assert [other[i]["ref_paths"] for i in range(len(other))] == first
    train = ReferenceFaceDataset(tmp_path, num_references=3, resolution=64, train=True)
    draws = []
    for epoch in range(6):
        train.set_epoch(epoch)
        draws.append(train[0]["ref_paths"])
    assert len({tuple(d) for d in draws}) > 1
    train.set_epoch(0)
    assert train[0]["ref_paths"] == draws[0]  # the same (seed, index, epoch) gives the same references

    # reference landmarks from sidecars (NaN where a reference has none, and in padded slots)
    bob = sorted((tmp_path / "bob").iterdir())
    write_sidecar(bob[1], {"scheme": "five", "landmarks": np.full((5, 2), 9.0), "points5": np.full((5, 2), 9.0)})
    test = ReferenceFaceDataset(tmp_path, num_references=3, resolution=64, train=False)
    s = test[8]  # bob's first image: its only reference is bob[1]
    assert s["ref_paths"] == [str(bob[1])] and "landmarks" not in s and s["ref_landmarks"].shape == (3, 5, 2)
    assert (s["ref_landmarks"][0] == 9.0).all() and torch.isnan(s["ref_landmarks"][1:]).all()
    assert "ref_landmarks" not in test[0] and test[9]["landmarks"].shape == (5, 2)

    # precomputed LQ targets with the same <identity>/<name> layout
    for p in [*sorted((tmp_path / "alice").iterdir()), *bob]:
        if p.suffix == ".png":
            save(tmp_path.parent / f"{tmp_path.name}_lq" / p.parent.name / p.name, faces[11], size=(16, 16))
    fixed = ReferenceFaceDataset(tmp_path, 3, resolution=64, train=False, lq_root=f"{tmp_path}_lq")
    assert fixed[9]["lq"].shape == (3, 64, 64) and abs(fixed[9]["lq"].mean().item() - 200 / 255) < 0.01


def test_identity_split_is_disjoint_stable_and_restricts_the_dataset(tmp_path: Path, faces: list[np.ndarray]) -> None:
    ids = [f"id{i:03d}" for i in range(50)]
    train, test = split_identities(ids, test_fraction=0.2, seed=1)
    assert len(test) == 10 and not set(train) & set(test) and sorted(train + test) == ids
    assert split_identities(list(reversed(ids)), 0.2, seed=1) == (train, test)
    assert split_identities(ids, 0.2, seed=2)[1] != test
    write_split_file(tmp_path / "split" / "test.txt", test, comment="test identities\nseed 1")
    assert read_split_file(tmp_path / "split" / "test.txt") == test
    with pytest.raises(FileExistsError):
        write_split_file(tmp_path / "split" / "test.txt", test)

    root = tmp_path / "celebref"
    identity_tree(root, faces, {f"p{i}": 3 for i in range(6)})
    train_ids, test_ids = split_identities([f"p{i}" for i in range(6)], test_fraction=0.34, seed=0)
    tr = ReferenceFaceDataset(root, num_references=2, resolution=64, identities=train_ids)
    te = ReferenceFaceDataset(root, num_references=2, resolution=64, identities=test_ids, train=False)
    seen_tr = {tr[i]["identity"] for i in range(len(tr))} | {Path(p).parent.name for i in range(len(tr))
                                                             for p in tr[i]["ref_paths"]}
    seen_te = {te[i]["identity"] for i in range(len(te))}
    assert seen_tr == set(train_ids) and seen_te == set(test_ids) and not seen_tr & seen_te
    with pytest.raises(ValueError, match="nobody"):
        ReferenceFaceDataset(root, resolution=64, identities=["p0", "nobody"])


# ------------------------------------------------------------------------------------------ inference dataset


def test_inference_reference_sources(tmp_path: Path, faces: list[np.ndarray]) -> None:
    lq = tmp_path / "lq"
    save(lq / "anna.png", faces[0], size=(40, 48))
    save(lq / "sub" / "ben.jpg", faces[1], size=(32, 32))
    refs = tmp_path / "refs"
    shared = [save(refs / "shared" / f"r{i}.png", faces[2 + i]) for i in range(5)]

    none = InferenceFolderDataset(lq)
    s = none[0]
    assert none.reference_mode == "none" and s["lq"].shape == (3, 48, 40) and s["refs"] == [] and s["ref_paths"] == []
    assert s["relpath"] == "anna.png" and s["size"].tolist() == [48, 40]

    ds = InferenceFolderDataset(lq, references=refs / "shared", max_references=3)
    assert ds.reference_mode == "shared"
    for i in range(2):
        assert ds[i]["ref_paths"] == [str(p) for p in shared[:3]] and len(ds[i]["refs"]) == 3

    per = refs / "per_input"
    anna_refs = [save(per / "anna" / f"{i}.png", faces[6 + i]) for i in range(2)]
    save(per / "ben" / "0.png", faces[9], size=(96, 96))
    ds = InferenceFolderDataset(lq, references=per, resolution=64)
    assert ds.reference_mode == "per_input" and ds[0]["ref_paths"] == [str(p) for p in anna_refs]
    assert ds[1]["lq"].shape == (3, 64, 64) and [r.shape for r in ds[1]["refs"]] == [(3, 64, 64)]

    (refs / "mapping.json").write_text(json.dumps({"anna.png": ["shared/r4.png", "shared/r0.png"],
                                                   "ben": str(shared[1])}))
    ds = InferenceFolderDataset(lq, references=refs / "mapping.json")
    assert ds.reference_mode == "json"
    assert ds[0]["ref_paths"] == [str(refs / "shared" / "r4.png"), str(refs / "shared" / "r0.png")]
    assert ds[1]["ref_paths"] == [str(shared[1])]

    (refs / "mapping.csv").write_text("lq,ref\nanna,shared/r1.png\nanna,shared/r2.png\nsub/ben.jpg,shared/r3.png;"
                                      "shared/r4.png\n")
    ds = InferenceFolderDataset(lq, references=refs / "mapping.csv", max_references=None)
    assert ds.reference_mode == "csv"
    assert [Path(p).name for p in ds[0]["ref_paths"]] == ["r1.png", "r2.png"]
    assert [Path(p).name for p in ds[1]["ref_paths"]] == ["r3.png", "r4.png"]
    batch = collate_faces([ds[0], ds[1]])
    assert isinstance(batch["lq"], list) and [len(r) for r in batch["refs"]] == [2, 2]  # sizes differ: no stack

    with pytest.warns(UserWarning, match="1 of 2 entries match no input image, e.g. .anna."):
        single = InferenceFolderDataset(lq / "sub" / "ben.jpg", references=refs / "mapping.csv", resolution=64)
    assert len(single) == 1 and single[0]["relpath"] == "ben.jpg" and len(single[0]["refs"]) == 2

    (refs / "broken.json").write_text(json.dumps({"anna": ["shared/nothere.png"]}))
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        InferenceFolderDataset(lq, references=refs / "broken.json")


def test_sample_split_exclusion_and_mirrored_views(tmp_path: Path) -> None:
    """The validation split of the quickstart levers: excluded people appear nowhere; flipped training views keep
    each landmark's role (the subject's left eye stays left of the right one in every sidecar); bad requests fail
    in one line and leave no half-built folder."""
    from honestface.data.sample_dataset import build_sample_split
    from honestface.data.sidecar import read_sidecar
    from honestface.face.schemes import DLIB68, FIVE

    split = build_sample_split(tmp_path / "s", size=64, train_views=6, test_views=2, test_identities=("group_t1_1",),
                               exclude_identities=("group_t1_4", "tom_hanks_aligned_0"), flip=True, detector="dlib")
    present = {p.name for p in split.train.iterdir()} | {p.name for p in split.test_hq.iterdir()}
    assert "group_t1_4" not in present and "tom_hanks_aligned_0" not in present
    assert split.test_identities == ["group_t1_1"] and "group_t1_1" not in split.train_identities
    assert len(split.train_identities) >= 5 and not (split.root / "all").exists()
    for png in sorted(split.train.glob("*/*.png")):
        side = read_sidecar(png)
        left, right = DLIB68.eye_centers(np.asarray(side["landmarks"]))
        five = np.asarray(side["points5"])
        assert left[0] < right[0] and five[FIVE.indices("left_eye")[0], 0] < five[FIVE.indices("right_eye")[0], 0]
    plain = build_sample_split(tmp_path / "plain", size=64, train_views=6, test_views=2, detector="dlib",
                               test_identities=("group_t1_1",), exclude_identities=("group_t1_4", "tom_hanks_aligned_0"))
    for png in sorted(split.test_hq.rglob("*.png")):  # flips change the training views only: same test faces
        assert png.read_bytes() == (plain.test_hq / png.relative_to(split.test_hq)).read_bytes()
    assert any(png.read_bytes() != (plain.train / png.relative_to(split.train)).read_bytes()
               for png in split.train.rglob("*.png"))
    settings = json.loads((split.root / "split.json").read_text())["settings"]
    assert settings["flip"] is True and settings["exclude_identities"] == ["group_t1_4", "tom_hanks_aligned_0"]
    for kwargs, message in [({"exclude_identities": ("nobody_0",)}, "unknown identity 'nobody_0'"),
                            ({"exclude_identities": ("group_t1_1",)}, "both tested and excluded")]:
        with pytest.raises(ValueError, match=message):
            build_sample_split(tmp_path / "bad", size=64, train_views=2, test_views=2, detector="dlib",
                               test_identities=("group_t1_1",), **kwargs)
        assert not (tmp_path / "bad").exists()


def test_mirrored_view_sidecar_is_the_flipped_landmarks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A view that is the crop mirrored gets exactly DLIB68.flip / FIVE.flip of the crop's points."""
    from honestface.data import views
    from honestface.data.sample_dataset import build_sample_identities
    from honestface.data.sidecar import read_sidecar
    from honestface.face.schemes import DLIB68, FIVE

    def mirror_only(crop, count, **_):
        w = crop.shape[1]
        return [(np.ascontiguousarray(crop[:, ::-1]), np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]))] * count

    monkeypatch.setattr(views, "augmented_views", mirror_only)
    name = build_sample_identities(tmp_path, size=64, views=2, photos=("astronaut",), detector="mtcnn", flip=True)[0]
    first, view = read_sidecar(tmp_path / name / "0.png"), read_sidecar(tmp_path / name / "1.png")
    np.testing.assert_allclose(view["landmarks"], DLIB68.flip(np.asarray(first["landmarks"]), 64), atol=1e-9)
    np.testing.assert_allclose(view["points5"], FIVE.flip(np.asarray(first["points5"]), 64), atol=1e-9)
