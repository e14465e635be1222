"""Released models by name: OSDFace and VSPBFR assembled from their authors' files through the weights registry and
converted once into a library model folder (issue 17).

Names (our choice):
- "osdface": Stable Diffusion 2.1-base (`sd21_base`) + OSDFace's VRE (`osdface_vre`, associate_2.ckpt) + its UNet
  LoRA and VRE projection (`osdface_lora`), run as HonestFace with `use_ide=False` (p = p_L) at OSDFace's native
  settings (512 px, bilinear, t = 399; `honestface.models.native`). Released code: jkwang28/OSDFace:infer.py.
- "vspbfr": VSPBFR's three released checkpoints (`vspbfr_style_encoder`, `vspbfr_code_diffuser`,
  `vspbfr_restoration`: 'g_ema' as the restoration network and 'd' as the discriminator, so training can continue
  from the folder). Released code: LonglongaaaGo/VSPBFR:restoration_test.py.

Conversion (our choice): the released parts are read once (weights-only) and written as a self-contained library
folder (`HonestFace.save_pretrained` / `VSPBFR.save_pretrained`) in the requested dtype, so later runs load it like
any library folder (meta-device build, tensors read in place). For OSDFace the LoRA is merged into the float32 UNet
first and the merged UNet is cast afterwards, the order of OSDFace's `infer.py` (`merge_Unet` on the float32 UNet,
then `.to(weight_dtype)`), streamed from the UNet's file tensor by tensor (`_merged_unet_state`); the VRE's VQ
encoder and codebook stay float32 in the folder (the pipeline casts them like any folder's). The folder holds
`released.json`: the name, the dtype and each source's registry name, file names, sizes and sha256.

Cache: `released_folder(name, dtype=...)` converts on first use into `$HONESTFACE_HOME/converted/<name>-<dtype>-<key>`,
`key` hashing the resolved source paths, sizes and modification times, so replacing a source file makes a new
conversion. Writing goes to a temporary sibling folder renamed into place (an interrupted conversion leaves nothing
that looks finished) under a file lock (the processes of one multi-process run convert once).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from honestface.log import get_logger
from honestface.released_table import RELEASED_MODELS, ReleasedModel, is_released_name, released_sources

__all__ = ["RELEASED_MODELS", "ReleasedModel", "build_released", "convert_released", "is_released_name",
           "released_folder", "released_sources", "resolve_pretrained"]

PathLike = str | os.PathLike
MANIFEST = "released.json"
CONVERTED_DIR = "converted"
log = get_logger(__name__)
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _files_of(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _source_key(name: str, dtype: torch.dtype, sources: Mapping[str, Path], options: Mapping[str, Any]) -> str:
    """Hash of what a conversion depends on: name, dtype, options and every source file's path, size, mtime."""
    h = hashlib.sha256(json.dumps([name, str(dtype), sorted((k, repr(v)) for k, v in options.items())]).encode())
    for part in sorted(sources):
        for f in _files_of(sources[part]):
            st = f.stat()
            h.update(f"{part}\0{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _build_osdface(sources: Mapping[str, Path], vre: Mapping[str, Any] | None = None) -> Any:
    from honestface.models.honestface import HonestFace

    weights = {k: str(v) for k, v in sources.items()}
    return HonestFace.from_preset("sd21", use_ide=False, with_discriminator=False, pretrained=["generator", "vre"],
                                  weights=weights, osdface_weights=True, vre=dict(vre or {}))


def vspbfr_preset_of(restoration: Path) -> str:
    """The VSPBFR preset whose restoration network has the shapes of the released `restoration_net.pt` 'g_ema'
    ("full" for the released files; the tiny preset for test files)."""
    from honestface.checkpoints import load_checkpoint
    from honestface.models.vspbfr.restoration_net import convert_official_restoration_state_dict
    from honestface.models.vspbfr.vspbfr import VSPBFR_PRESETS, RestorationNetwork

    ckpt = load_checkpoint(restoration)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("g_ema"), Mapping):
        raise TypeError(f"{restoration}: no 'g_ema' entry; is this VSPBFR's restoration_net.pt?")
    shapes = {k: tuple(v.shape) for k, v in convert_official_restoration_state_dict(ckpt["g_ema"]).items()}
    del ckpt
    for preset, config in VSPBFR_PRESETS.items():
        with torch.device("meta"):
            net = RestorationNetwork(**config["restoration"])
        if {k: tuple(v.shape) for k, v in net.state_dict().items()} == shapes:
            return preset
    raise ValueError(f"{restoration}: its restoration network matches no VSPBFR preset "
                     f"({', '.join(VSPBFR_PRESETS)}); pass preset= and overrides=")


def _build_vspbfr(sources: Mapping[str, Path], preset: str | None = None,
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    from honestface.models.vspbfr.vspbfr import VSPBFR

    preset = preset or vspbfr_preset_of(sources["vspbfr_restoration"])
    return VSPBFR.from_official(sources["vspbfr_style_encoder"], sources["vspbfr_code_diffuser"],
                                sources["vspbfr_restoration"], preset=preset, with_discriminator=True,
                                overrides=overrides)


_BUILDERS: dict[str, Callable[..., Any]] = {"osdface": _build_osdface, "vspbfr": _build_vspbfr}


def build_released(name: str, weights: Mapping[str, PathLike] | None = None, home: PathLike | None = None,
                   **options: Any) -> Any:
    """The released model `name` built from its files (float32, as released). options: "osdface": `vre` (VRE
    constructor overrides; the sizes are read from the files); "vspbfr": `preset` (default: the preset the files'
    shapes match, `vspbfr_preset_of`), `overrides` (as in `VSPBFR.from_official`)."""
    return _BUILDERS[_spec(name).name](released_sources(name, weights, home), **options)


def _merged_unet_state(gen: Any, unet_file: Path, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """The UNet's state with the LoRA merged (peft's own `merge()`, in the UNet's float32) and cast to `dtype`,
    read from `unet_file` tensor by tensor; None where this path does not apply (no such file: diffusers loaded
    another format; a DoRA or bias LoRA, whose merge also changes other tensors).

    Why (issue 17): merging the whole float32 UNet in memory and casting it afterwards peaked at 5.8 GiB RSS for SD
    2.1-base; streamed, each float32 tensor lives only while it is merged and cast (the merged UNet in `dtype`
    plus one chunk). The arithmetic is the same merge call on the same float32 values, so the result is identical
    (tests/test_released_models.py compares it bit for bit with the released merge)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from honestface.models.loading import stream_safetensors

    layers = {n: m for n, m in gen.unet.named_modules() if isinstance(m, BaseTunerLayer)}
    if not unet_file.is_file() or any(any(m.use_dora.values()) or any(getattr(m, "lora_bias", {}).values())
                                      for m in layers.values()):
        return None
    expected = {n.replace(".base_layer.", ".") for n, _ in gen.unet.named_parameters() if ".lora_" not in n}
    state: dict[str, torch.Tensor] = {}
    for key, t in stream_safetensors(unet_file):  # views of the mapped file, dropped as we go
        name, _, leaf = key.rpartition(".")
        layer = layers.get(name)
        if layer is not None and leaf == "weight":
            base = layer.get_base_layer()
            base.weight = torch.nn.Parameter(t.to(base.weight.dtype, copy=True), requires_grad=False)
            layer.merge()  # float32, as the released merge_Unet
            state[key] = base.weight.data.to(dtype)
            base.weight = torch.nn.Parameter(state[key], requires_grad=False)
        else:
            state[key] = t.to(dtype, copy=True) if t.is_floating_point() else t.clone()
        del t
    if set(state) != expected or not all(m.merged for m in layers.values()):
        raise ValueError(f"{unet_file}: its tensors are not those of the UNet that was loaded")
    return state


def _save_osdface(model: Any, folder: Path, dtype: torch.dtype, sources: Mapping[str, Path]) -> None:
    from honestface.models.loading import load_into, release_free_memory

    gen = model.generator
    unet_file = Path(sources["sd21_base"]) / "unet" / "diffusion_pytorch_model.safetensors"
    state = _merged_unet_state(gen, unet_file, dtype)
    if state is None:
        gen.merge_lora()  # float32 merge, as the released merge_Unet
    gen.remove_lora()  # the merged weights stay in the base layers
    if state is not None:
        load_into(gen.unet, state, "UNet", unet_file, assign=True)
        del state
    gen.to(dtype=dtype)
    release_free_memory()
    model.sources = {}  # every part goes into the folder: no path of this machine is recorded
    model.save_pretrained(folder)


def _save_vspbfr(model: Any, folder: Path, dtype: torch.dtype, sources: Mapping[str, Path]) -> None:
    model.to(dtype=dtype)
    model.save_pretrained(folder)


def _manifest(name: str, dtype: torch.dtype, sources: Mapping[str, Path]) -> dict[str, Any]:
    from honestface.weights import file_sha256

    parts = {}
    for part, path in sources.items():
        files = _files_of(path)
        parts[part] = {"files": [{"name": f.name if path.is_file() else f.relative_to(path).as_posix(),
                                  "size": f.stat().st_size, "sha256": file_sha256(f)} for f in files]}
    return {"format": "honestface-released", "version": 1, "released": name, "family": RELEASED_MODELS[name].family,
            "upstream": RELEASED_MODELS[name].upstream, "dtype": _DTYPE_NAMES[dtype], "sources": parts}


def convert_released(name: str, output: PathLike, *, weights: Mapping[str, PathLike] | None = None,
                     home: PathLike | None = None, dtype: torch.dtype = torch.float32, overwrite: bool = False,
                     **options: Any) -> Path:
    """Write released model `name` as a library model folder at `output` in `dtype` (see the module docstring).

    The folder appears complete or not at all; an existing non-empty `output` is refused unless `overwrite`
    (then replaced only once the new folder is complete). Returns `output`."""
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, _DTYPE_NAMES))}, got {dtype}")
    out = Path(output).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite to replace it)")
    sources = released_sources(name, weights, home)  # fail on missing parts before any heavy work
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model = _BUILDERS[name](sources, **options)
        (_save_osdface if name == "osdface" else _save_vspbfr)(model, tmp, dtype, sources)
        del model
        from honestface.io import atomic_write_text

        atomic_write_text(tmp / MANIFEST, json.dumps(_manifest(name, dtype, sources), indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def released_folder(name: str, *, weights: Mapping[str, PathLike] | None = None, home: PathLike | None = None,
                    dtype: torch.dtype | None = None, quiet: bool = False, **options: Any) -> Path:
    """The library folder of released model `name` in `dtype` (None: float32), converted on first use and cached
    under $HONESTFACE_HOME/converted (see the module docstring)."""
    from filelock import FileLock

    from honestface.weights import weights_home

    dtype = torch.float32 if dtype is None else dtype
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, _DTYPE_NAMES))}, got {dtype}")
    sources = released_sources(name, weights, home)
    cache = weights_home(home) / CONVERTED_DIR
    folder = cache / f"{name}-{_DTYPE_NAMES[dtype]}-{_source_key(name, dtype, sources, options)}"
    if (folder / MANIFEST).is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / MANIFEST).is_file():  # another process may have finished it while we waited
            if not quiet:
                log.info("converting released model '%s' once into %s (%s); later runs load this folder", name,
                         folder, _DTYPE_NAMES[dtype])
            convert_released(name, folder, weights=weights, home=home, dtype=dtype, overwrite=True, **options)
    return folder


def _spec(name: str) -> ReleasedModel:
    if name not in RELEASED_MODELS:
        raise KeyError(f"unknown released model {name!r}; known: {', '.join(RELEASED_MODELS)}")
    return RELEASED_MODELS[name]


def resolve_pretrained(directory: PathLike, family: str, weights: Mapping[str, PathLike] | None = None,
                       dtype: torch.dtype | None = None) -> Path:
    """`directory` as a folder path, or, for a released model name of `family`, its converted folder (converting
    on first use). A name of the other family is refused with the class to use."""
    if not is_released_name(directory):
        return Path(directory)
    spec = _spec(str(directory))
    if spec.family != family:
        cls = {"honestface": "HonestFace / HonestFacePipeline", "vspbfr": "VSPBFR / VSPBFRPipeline"}[spec.family]
        raise ValueError(f"'{spec.name}' is a {spec.family} model: load it with {cls}.from_pretrained")
    return released_folder(spec.name, weights=weights, dtype=dtype)  # names other than its parts are ignored
