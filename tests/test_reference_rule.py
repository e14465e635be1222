"""One rule for which references belong to an image (honestface/data/reference_rule.py): one table of layouts,
checked through every consumer (the rule itself, the inference dataset, the inference runner, the evaluation), so
`--refs X` means the same references in scripts/infer.py and scripts/evaluate.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from honestface.data.reference_rule import REFERENCE_MODES, resolve_references

INPUTS = ("alice/1.png", "alice/2.png", "bob/1.png", "carol.png")

# layout name -> (files under refs/ (or the mapping file's text), mode, expected references per input, relative
# to refs/)
LAYOUTS = {
    "none": (None, "none", {}),
    "json": ({"map.json": json.dumps({"alice/1.png": ["r/a.png"], "carol": "r/c.png"}), "r/a.png": "", "r/c.png": ""},
             "json", {"alice/1.png": ["r/a.png"], "carol.png": ["r/c.png"]}),
    "csv": ({"map.csv": "lq,ref\nbob/1.png,r/b.png;r/c.png\n", "r/b.png": "", "r/c.png": ""},
            "csv", {"bob/1.png": ["r/b.png", "r/c.png"]}),
    "per_input": ({"alice/1/x.png": "", "alice/1/deep/y.png": "", "carol/z.png": "", "alice/3.png": ""},
                  "per_input", {"alice/1.png": ["alice/1/deep/y.png", "alice/1/x.png"], "carol.png": ["carol/z.png"]}),
    "identity": ({"alice/1.png": "", "alice/3.png": "", "bob/2.png": "", "bob/sub/9.png": ""},
                 "identity", {"alice/1.png": ["alice/3.png"], "alice/2.png": ["alice/1.png", "alice/3.png"],
                              "bob/1.png": ["bob/2.png"]}),
    "shared": ({"p.png": "", "q/r.png": ""}, "shared", {i: ["p.png", "q/r.png"] for i in INPUTS}),
}


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(path)


def _layout(tmp_path: Path, name: str) -> tuple[Path, Path | None, str, dict[str, list[Path]]]:
    """(input folder, the refs argument, mode, expected reference files per input)."""
    files, mode, want = LAYOUTS[name]
    inputs = tmp_path / "lq"
    for i, rel in enumerate(INPUTS):
        _png(inputs / rel, 40 + 10 * i)
    refs_root = tmp_path / "refs"
    arg = None
    for j, (rel, text) in enumerate((files or {}).items()):
        if rel.endswith((".json", ".csv")):
            (refs_root / rel).parent.mkdir(parents=True, exist_ok=True)
            (refs_root / rel).write_text(text)
            arg = refs_root / rel
        else:
            _png(refs_root / rel, 120 + j)
    if files is not None and arg is None:
        arg = refs_root
    return inputs, arg, mode, {i: [refs_root / r for r in want.get(i, [])] for i in INPUTS}


def test_every_mode_has_a_row():
    assert {mode for _, mode, _ in LAYOUTS.values()} == set(REFERENCE_MODES)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_rule_itself(tmp_path, layout):
    inputs, arg, mode, want = _layout(tmp_path, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = resolve_references([inputs / r for r in INPUTS], list(INPUTS), arg)
    assert found.mode == mode
    assert dict(zip(INPUTS, found.lists)) == want
    assert resolve_references([inputs / r for r in INPUTS], list(INPUTS), arg, max_references=1).lists == \
        [w[:1] for w in want.values()]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inference_dataset_and_runner_use_it(tmp_path, layout):
    from honestface.apps.infer_plan import find_references
    from honestface.data.references import InferenceFolderDataset

    inputs, arg, mode, want = _layout(tmp_path, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = InferenceFolderDataset(inputs, arg, max_references=None)
    assert ds.reference_mode == mode
    assert dict(zip(ds.relpaths, ds.ref_paths)) == want
    icfg = OmegaConf.create({"references": None if arg is None else str(arg), "max_references": None})
    files = [inputs / r for r in INPUTS]
    how, refs = find_references(icfg, inputs, files)
    assert how == mode and dict(zip(INPUTS, refs)) == want


@pytest.mark.parametrize("layout", ["identity", "per_input", "json", "shared"])
def test_evaluation_uses_it(tmp_path, layout):
    from honestface.metrics.evaluate import evaluate_folders

    inputs, arg, _, want = _layout(tmp_path, layout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_folders({"same": inputs}, inputs, refs=arg, metrics=["psnr"], device="cpu")
    got = {row["gt"].relative_to(inputs).as_posix(): list(row["refs"]) for row in result.rows["same"]}
    assert got == want


def test_identity_layout_never_gives_an_image_its_own_ground_truth(tmp_path):
    """refs = the HQ folder of the same people: an input's own HQ file is not one of its references."""
    hq = tmp_path / "hq"
    for rel in INPUTS:
        _png(hq / rel, 200)
    found = resolve_references([tmp_path / "lq" / r for r in INPUTS], list(INPUTS), hq)
    assert found.mode == "identity"
    assert found.lists[0] == [hq / "alice/2.png"] and found.lists[1] == [hq / "alice/1.png"]
    assert found.lists[2] == [] and found.lists[3] == []  # bob has one image; carol has no identity folder


def test_bad_references_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="references not found"):
        resolve_references([tmp_path / "a.png"], ["a.png"], tmp_path / "missing")
    (tmp_path / "refs.txt").write_text("x")
    with pytest.raises(ValueError, match=r"must be \.json or \.csv"):
        resolve_references([tmp_path / "a.png"], ["a.png"], tmp_path / "refs.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no valid reference image"):
        resolve_references([tmp_path / "a.png"], ["a.png"], tmp_path / "empty")
    with pytest.raises(ValueError, match="max_references"):
        resolve_references([tmp_path / "a.png"], ["a.png"], None, max_references=-1)


class _Encoder:
    """A stand-in identity encoder: the embedding is the mean colour, so calls and inputs are visible."""

    name = "mean"

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def embed_image(self, rgb: np.ndarray, face) -> np.ndarray:
        self.calls.append((rgb.shape, len(np.asarray(getattr(face, "points5", face)))))
        e = rgb.reshape(-1, 3).mean(0).astype(np.float32) + 1.0
        return (e / np.linalg.norm(e))[None]  # (1, 3)


def test_pool_rule_square_crops_are_aligned_photos_go_through_the_detector(tmp_path, mtcnn_detector):
    """One alignment rule for the runner and the pipelines: square images are aligned crops (no detector is built);
    any other image sends the whole list through the detector, built only then; aligned=True/False force it."""
    from skimage import data

    from honestface.pipelines import ReferencePool

    built = []

    def factory():
        built.append(1)
        return mtcnn_detector

    crops = [np.full((32, 32, 3), v, np.uint8) for v in (40, 200)]
    pool = ReferencePool(crops, _Encoder(), factory)
    assert pool.aligned and built == [] and [c.shape for c in pool.crops] == [(32, 32, 3)] * 2
    photo = data.astronaut()  # (512, 512, 3): square, so only aligned=False treats it as a photo
    wide = np.ascontiguousarray(photo[:, :400])  # (512, 400, 3), face inside
    pool = ReferencePool([wide], _Encoder(), factory, size=64)
    assert not pool.aligned and built == [1] and pool.crops[0].shape == (64, 64, 3)
    forced = ReferencePool([photo], _Encoder(), mtcnn_detector, aligned=False, size=64)
    assert not forced.aligned and forced.crops[0].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="must be square FFHQ crops"):
        ReferencePool([wide], _Encoder(), aligned=True)
    with pytest.raises(ValueError, match="needs a face detector"):
        ReferencePool([wide], _Encoder())


def test_pool_from_paths_keeps_readable_files_with_their_paths_as_ids(tmp_path):
    from honestface.pipelines import ReferencePool

    _png(tmp_path / "a.png", 50)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="skipping reference .*broken.png"):
        pool = ReferencePool.from_paths([tmp_path / "a.png", tmp_path / "broken.png"], _Encoder())
    assert pool.ids == [str(tmp_path / "a.png")] and pool.aligned
    with pytest.warns(UserWarning):
        assert ReferencePool.from_paths([tmp_path / "broken.png"], _Encoder()) is None
