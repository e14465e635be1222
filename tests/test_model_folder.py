"""The two composite models share one shape: `from_preset`, `save_pretrained(folder)` (atomic) and
`from_pretrained(folder, weights=, with_discriminator=, dtype=)`; one test per behaviour covers both families."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from honestface.models import VSPBFR, HonestFace
from honestface.models.folder import read_folder_config, save_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = {"honestface": (HonestFace, "honestface_config.json"), "vspbfr": (VSPBFR, "vspbfr_config.json")}


def _build(family: str):
    cls, _ = FAMILIES[family]
    return cls.from_preset("tiny", with_discriminator=True)


def test_one_signature_for_both_families():
    for cls, _ in FAMILIES.values():
        params = list(inspect.signature(cls.from_pretrained).parameters)
        assert params[:4] == ["folder", "weights", "with_discriminator", "dtype"], cls.__name__
        assert {"revision", "cache_dir", "token", "local_files_only"} <= set(params), cls.__name__  # Hub ids
        assert list(inspect.signature(cls.save_pretrained).parameters) == ["self", "folder", "push_to_hub", "repo_id",
                                                                          "hub_options"], cls.__name__
        assert callable(cls.push_to_hub), cls.__name__
        assert "name" in inspect.signature(cls.from_preset).parameters, cls.__name__


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_in_bf16_and_without_discriminator(family, tmp_path):
    cls, config_file = FAMILIES[family]
    model = _build(family)
    folder = model.save_pretrained(tmp_path / "m")
    assert folder == tmp_path / "m" and (folder / config_file).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind
    loaded = cls.from_pretrained(folder, weights=None, with_discriminator=False, dtype=torch.bfloat16)
    assert loaded.discriminator is None and not loaded.training
    want = {k: v for k, v in model.state_dict().items() if not k.startswith("discriminator.")}
    got = loaded.state_dict()
    assert set(got) == set(want)
    for key, value in got.items():
        if value.is_floating_point():
            assert value.dtype == torch.bfloat16 and torch.equal(value, want[key].to(torch.bfloat16)), key
    full = cls.from_pretrained(folder)
    assert full.discriminator is not None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in full.state_dict().items())


@pytest.mark.parametrize("family", FAMILIES)
def test_a_failed_save_leaves_the_folder_as_it_was(family, tmp_path, monkeypatch):
    cls, config_file = FAMILIES[family]
    model = _build(family)
    folder = model.save_pretrained(tmp_path / "m")
    (folder / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).add_(1.0)  # a changed model to save over it

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # untouched, notes kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # the temporary folder is gone
    monkeypatch.undo()
    model.save_pretrained(folder)  # now it lands, the user's file still there
    assert (folder / "notes.txt").read_text() == "mine" and (folder / config_file).is_file()
    again = cls.from_pretrained(folder)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())


def test_files_a_new_save_does_not_write_are_removed(tmp_path):
    def weights(names):
        def write(tmp):
            for n in names:
                (tmp / n).write_text(n)
        return write

    family = ("c.json", "a.bin", "b.bin")
    save_model_folder(tmp_path / "m", "c.json", {"format": "x"}, weights(["a.bin", "b.bin"]), family)
    (tmp_path / "m" / "keep.txt").write_text("user")
    save_model_folder(tmp_path / "m", "c.json", {"format": "x", "v": 2}, weights(["a.bin"]), family)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["a.bin", "c.json", "keep.txt"]
    assert read_folder_config(tmp_path / "m", "c.json", "x", "test") == {"format": "x", "v": 2}
    with pytest.raises(NotADirectoryError, match="it is a file"):
        save_model_folder(tmp_path / "m" / "keep.txt", "c.json", {}, weights([]), family)


@pytest.mark.parametrize("content, message", [(None, "not a X folder"), ("{oops", "not valid JSON"),
                                              (json.dumps({"format": "y"}), "not a X config"),
                                              (json.dumps([1]), "not a X config")])
def test_folder_config_errors_are_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / "c.json").write_text(content)
    with pytest.raises((FileNotFoundError, ValueError), match=message) as err:
        read_folder_config(tmp_path, "c.json", "x", "X")
    assert "\n" not in str(err.value)
