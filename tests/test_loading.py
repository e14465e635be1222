"""Memory-lean loading (honestface.models.loading): chunked safetensors reads, meta-device builds, direct dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from honestface.models import HonestFace
from honestface.models.loading import check_materialised, empty_weights, load_into, read_safetensors


def test_read_safetensors_chunks_and_casts(tmp_path):
    state = {f"w{i}": torch.randn(16, 32) for i in range(5)} | {"idx": torch.arange(7)}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    whole = read_safetensors(path)
    tiny_chunks = read_safetensors(path, torch.bfloat16, chunk_bytes=1)  # re-opened for every tensor
    assert whole.keys() == state.keys() and all(torch.equal(whole[k], state[k]) for k in state)
    assert tiny_chunks["w3"].dtype == torch.bfloat16 and torch.equal(tiny_chunks["w3"], state["w3"].bfloat16())
    assert tiny_chunks["idx"].dtype == torch.int64  # integer tensors keep their dtype
    assert list(read_safetensors(path, prefix="w1")) == ["w1"]
    save_file({"conv": torch.randn(8, 4, 3, 3), "lin": torch.randn(8, 4)}, str(tmp_path / "c.safetensors"))
    for dtype in (None, torch.bfloat16):  # with and without a cast: one copy, already channels-last
        cl = read_safetensors(tmp_path / "c.safetensors", dtype, channels_last=True)
        assert cl["conv"].is_contiguous(memory_format=torch.channels_last) and not cl["conv"].is_contiguous()
        assert cl["lin"].is_contiguous()
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        read_safetensors(tmp_path / "nope.safetensors")


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
def test_read_tensors_do_not_keep_the_file_mapped(tmp_path):
    # Tensors read in their stored dtype must not be views of the mapped file: such views kept the whole file
    # resident next to the model (measured: 4.5 -> 3.4 GiB peak for the 1.9 GB bf16 OSDFace folder).
    state = {f"w{i}": torch.randn(64, 64).bfloat16() for i in range(4)}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    for dtype in (None, torch.bfloat16, torch.float32):
        out = read_safetensors(path, dtype)
        assert str(path) not in Path("/proc/self/maps").read_text(), dtype
        assert all(torch.equal(out[k].float(), state[k].float()) for k in state)


def test_meta_build_needs_every_weight():
    with empty_weights():
        net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert all(p.is_meta for p in net.parameters())
    load_into(net, {"0.weight": torch.ones(4, 3), "0.bias": torch.zeros(4)}, "the net", "file.safetensors",
              allow_missing=("1.",), assign=True)
    assert torch.equal(net[0].weight, torch.ones(4, 3))
    with pytest.raises(ValueError, match=r"the net: '1.weight' was not loaded"):
        check_materialised(net, "the net")
    with pytest.raises(ValueError, match=r"file.safetensors: saved weights of the net do not match .*'1.weight'"):
        load_into(net, {"0.weight": torch.ones(4, 3), "0.bias": torch.zeros(4)}, "the net", "file.safetensors")


def test_from_pretrained_in_bf16_equals_loading_then_casting(tmp_path):
    model = HonestFace.from_preset("tiny", pretrained=False, with_discriminator=False, lora_rank=4,
                                   encode_mode="mode")  # deterministic z_L
    with torch.no_grad():  # a non-zero LoRA so that the saved adapter matters
        for name, p in model.generator.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(tmp_path / "m")
    cast = HonestFace.from_pretrained(tmp_path / "m", with_discriminator=False).to(dtype=torch.bfloat16)
    direct = HonestFace.from_pretrained(tmp_path / "m", with_discriminator=False, dtype=torch.bfloat16)
    a, b = cast.state_dict(), direct.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert all(p.dtype == torch.bfloat16 for p in direct.parameters())
    lq = torch.rand(1, 3, 64, 64) * 2 - 1
    refs = torch.rand(1, 2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref_out = model(lq, refs).x_hat
        out = direct(lq.bfloat16(), refs.bfloat16()).x_hat
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert (out.float() - ref_out).abs().mean() < 0.05  # bf16 rounding only


def test_loading_a_folder_that_holds_every_weight_initialises_nothing(tmp_path, monkeypatch):
    """Every part whose weights are in the folder is built on the meta device and adopts the tensors read: no
    random initialisation to throw away (the SD-size VRE's alone took 0.3 s of a 2 s load). Without a LoRA, as
    converted released folders are (peft initialises the small adapters it creates)."""
    HonestFace.from_preset("tiny", pretrained=False, with_discriminator=False,
                           lora_rank=0).save_pretrained(tmp_path / "m")
    initialised = []
    real = torch.Tensor.uniform_

    def spy(t, *args, **kwargs):
        if not t.is_meta:
            initialised.append(tuple(t.shape))
        return real(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "uniform_", spy)
    loaded = HonestFace.from_pretrained(tmp_path / "m", with_discriminator=False, channels_last=True)
    assert initialised == []
    convs = [m.weight for m in loaded.vre.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)  # read as asked


def test_tiny_model_with_the_bundled_dlib_identity_backbone_round_trips(tmp_path):
    """The small-scale recipe's IDE sees real identity embeddings: the pretrained dlib recogniser as the frozen
    identity backbone, recorded as a source (not copied into the folder) and re-read on load."""
    model = HonestFace.from_preset("tiny", pretrained=["identity_backbone"], identity_weights="dlib_resnet",
                                   with_discriminator=False, encode_mode="mode")
    assert model.identity_backbone.id_dim == 128 and model.face_identity_encoder.config.id_dim == 128
    model.save_pretrained(tmp_path / "m")
    loaded = HonestFace.from_pretrained(tmp_path / "m", with_discriminator=False)
    assert not any(k.startswith("identity_backbone.") for k in read_safetensors(tmp_path / "m" / "frozen.safetensors"))
    lq, refs = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(lq, refs).x_hat, loaded(lq, refs).x_hat, atol=1e-5)


def test_reuse_large_allocations_keeps_freed_buffers_for_the_next_one():
    # In a child process (the setting is process-wide): a freed 64 MiB buffer is page-faulted in anew on every
    # allocation by default, and reused without faults once the heap keeps it.
    import subprocess
    import sys

    import honestface.models.loading

    # loading.py alone (torch only): `import honestface.models` would spend about 9 s importing every model
    loading_py = honestface.models.loading.__file__
    code = f"""
import ctypes, importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("loading", {loading_py!r})
loading = importlib.util.module_from_spec(spec); spec.loader.exec_module(loading)
if sys.argv[1] == "1" and not loading.reuse_large_allocations():
    print(-1); raise SystemExit
libc = ctypes.CDLL("libc.so.6"); libc.malloc.restype = ctypes.c_void_p; libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(3):
    p = libc.malloc(64 << 20); f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(p, 1, 64 << 20); faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    libc.free(p)
print(max(faults[1:]))
"""
    if not Path("/proc/self/maps").is_file():
        pytest.skip("glibc's malloc is Linux's")
    runs = [subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True)
            for flag in ("0", "1")]
    default, reused = (int(r.stdout.split()[-1]) for r in runs)
    if reused == -1:
        pytest.skip("not glibc")
    assert reused * 10 < default  # 16384 pages of 4 KiB by default (fewer with transparent huge pages)

