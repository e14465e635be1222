"""ONNX export of a saved model folder (HonestFace or VSPBFR): every inference graph (`honestface.export.graphs`,
`honestface.export.vspbfr_graphs`) as one .onnx file with a dynamic batch, each validated with `onnx.checker`, plus
`onnx_manifest.json` so `honestface.export.OnnxPipeline` runs the export without the torch model folder.

Manifest (`MANIFEST_FILE`): format "honestface-onnx", version, family ("honestface" | "vspbfr"), opset, exporter,
native settings (resolution, resize, timestep), per graph its file (+ `data`: the file of its tensors when the
graph is over 2 GB) and input / output names, the family's runtime facts under the family's name (HonestFace: latent
shape, encode mode, use_ide, blind mode; VSPBFR: code shapes, diffusion steps, bank resolutions and the noise maps
each graph takes) and the torch model folder's own config (`model_config`, as saved by `save_pretrained`).

Our choices: the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`): it traces the diffusers UNet / VAE
and the HF CLIP tower at the fixed face resolution without graph breaks, and its custom-symbolic hook lets us map
CLIP's antialiased bicubic resize (`aten::_upsample_bicubic2d_aa`, not exported by torch) onto ONNX Resize (opset
18, antialias=1, cubic a = -0.5, exclude_outside=1), which matches torch to ~1e-5. Opset 18. The LoRA is merged
into the UNet before export (one plain UNet graph). A graph over 2 GB keeps its tensors in one `<name>.onnx.data`
file next to it (torch writes one file per tensor, named after the tensors, which would collide between graphs
sharing a folder and fill it with thousands of files). The output folder is written atomically: files go to a
temporary sibling folder that replaces the output only after every graph passed the checker; an existing export
is replaced only with `overwrite=True`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["MANIFEST_FILE", "ONNX_FORMAT", "OPSET", "export_onnx", "model_family", "read_manifest"]

MANIFEST_FILE = "onnx_manifest.json"
ONNX_FORMAT = "honestface-onnx"
OPSET = 18
FAMILIES = ("honestface", "vspbfr")  # families with an ONNX export


def model_family(model_dir: str | os.PathLike) -> str:
    """"honestface" or "vspbfr" for a saved torch model folder; a one-line error for anything else."""
    from honestface.pipelines import HonestFacePipeline, VSPBFRPipeline

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    if VSPBFRPipeline.is_model_folder(model_dir):
        return "vspbfr"
    if HonestFacePipeline.is_model_folder(model_dir):
        return "honestface"
    raise ValueError(f"{model_dir}: not a saved HonestFace or VSPBFR folder (no {HonestFacePipeline.model_config_file}"
                     f" or {VSPBFRPipeline.model_config_file}); export a save_pretrained / training output folder")


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an export folder, checked: its graph files must exist."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"not an ONNX export folder (no {MANIFEST_FILE}): {folder}; "
                                f"make one with honestface-export --format onnx")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ONNX_FORMAT or manifest.get("family") not in FAMILIES:
        raise ValueError(f"{path}: not a {ONNX_FORMAT} manifest of a known family")
    for name, graph in manifest["graphs"].items():
        for file in (graph["file"], *([graph["data"]] if graph.get("data") else [])):
            if not (Path(folder) / file).is_file():
                raise FileNotFoundError(f"{folder}: graph {name!r} is missing its file {file}; export again")
    return manifest


def _bicubic_aa_symbolic() -> Callable[..., Any]:
    from torch.onnx import symbolic_helper

    @symbolic_helper.parse_args("v", "is", "i", "none")
    def symbolic(g: Any, x: Any, size: list[int], align_corners: int, *scales: Any) -> Any:
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        sizes = g.op("Constant", value_t=torch.tensor(size, dtype=torch.int64))
        return g.op("Resize", x, empty, empty, sizes, mode_s="cubic", antialias_i=1, cubic_coeff_a_f=-0.5,
                    exclude_outside_i=1, axes_i=[2, 3],
                    coordinate_transformation_mode_s="align_corners" if align_corners else "half_pixel")

    return symbolic


def _config_file(family: str) -> str:
    from honestface.pipelines import pipeline_class

    return pipeline_class(family).model_config_file


def export_graph(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int = OPSET) -> list[str]:
    """Export one graph to `path` (a graph over 2 GB with its tensors in `<path>.data`) and validate it with the
    onnx checker; returns the graph's actual input names (the exporter drops inputs the graph does not use)."""
    import onnx

    parts = path.parent / f".{path.stem}.parts"  # the exporter writes one file per tensor of a graph over 2 GB
    parts.mkdir()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation warnings of the TorchScript exporter
            torch.onnx.export(module.eval(), args, str(parts / path.name), input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, opset_version=opset,
                              dynamo=False, do_constant_folding=True)
        _gather_external_data(parts / path.name, path)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    onnx.checker.check_model(str(path))  # by path: also works for graphs with external data (> 2 GB)
    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of an ONNX graph: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _tensors(sub)


def _gather_external_data(source: Path, path: Path) -> None:
    """Write the graph `source` to `path`; its external tensors (one file per tensor, as torch writes a graph over
    2 GB, named after the tensors, so two graphs in one folder could overwrite each other's) are copied one by one
    into the single file `<path>.data` (4 KiB aligned), never all in memory at once."""
    import onnx

    model = onnx.load(str(source), load_external_data=False)
    external = [t for t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        shutil.move(source, path)
        return
    data = path.with_name(path.name + ".data")
    with open(data, "wb") as out:
        for tensor in external:
            info = {e.key: e.value for e in tensor.external_data}
            with open(source.parent / info["location"], "rb") as f:
                f.seek(int(info.get("offset", 0)))
                blob = f.read(int(info["length"])) if "length" in info else f.read()
            out.write(b"\0" * (-out.tell() % 4096))
            offset = out.tell()
            out.write(blob)
            del tensor.external_data[:]
            for key, value in (("location", data.name), ("offset", str(offset)), ("length", str(len(blob)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _graph_entry(folder: Path, name: str, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    """The manifest entry of an exported graph: its file, external-data file (graphs over 2 GB) and names."""
    data = f"{name}.onnx.data"
    return {"file": f"{name}.onnx", **({"data": data} if (folder / data).is_file() else {}), "inputs": inputs,
            "outputs": outputs}


def _honestface_export(model_dir: Path, tmp: Path, weights: dict[str, str] | None, opset: int) -> dict[str, Any]:
    from honestface.export.graphs import honestface_graphs
    from honestface.models import HonestFace

    model = HonestFace.from_pretrained(model_dir, weights=dict(weights or {}), with_discriminator=False).float()
    model.merge_lora()
    gen = model.generator
    graphs = {}
    for name, (module, args, ins, outs, dyn) in honestface_graphs(model).items():
        used = export_graph(module, args, tmp / f"{name}.onnx", ins, outs, dyn, opset)
        graphs[name] = _graph_entry(tmp, name, used, outs)
    r = model.native_settings.resolution
    with torch.no_grad():
        latent = list(gen.vae.encode(torch.zeros(1, 3, r, r)).latent_dist.mean.shape[1:])
    facts = {"latent_shape": latent, "encode_mode": gen.encode_mode, "use_ide": model.use_ide,
             "blind_mode": model.fusion.config.blind_mode if model.use_ide else None}
    return {"native": model.native_settings.to_dict(), "graphs": graphs, "honestface": facts}


def _vspbfr_export(model_dir: Path, tmp: Path, weights: dict[str, str] | None, opset: int) -> dict[str, Any]:
    from honestface.export.vspbfr_graphs import vspbfr_graphs
    from honestface.models.vspbfr import VSPBFR

    model = VSPBFR.from_pretrained(model_dir, weights=dict(weights or {}) or None, with_discriminator=False).float()
    parts, facts = vspbfr_graphs(model.eval())
    graphs = {}
    for name, (module, args, ins, outs, dyn) in parts.items():
        used = export_graph(module, args, tmp / f"{name}.onnx", ins, outs, dyn, opset)
        graphs[name] = _graph_entry(tmp, name, used, outs)
    return {"native": model.native_settings.to_dict(), "graphs": graphs, "vspbfr": facts}


def export_onnx(model_dir: str | os.PathLike, output: str | os.PathLike, *, weights: dict[str, str] | None = None,
                opset: int = OPSET, overwrite: bool = False) -> Path:
    """Export the saved HonestFace or VSPBFR model folder `model_dir` (family read from its config file) to the
    folder `output` (module docstring); returns it. `weights`: registry name -> path for frozen parts the folder
    names by registry entry."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    model_dir, out = Path(model_dir), Path(output)
    family = model_family(model_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"output folder {out} is not empty; choose another or pass overwrite=True (--overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.exporting-", dir=out.parent))
    op = "aten::_upsample_bicubic2d_aa"
    register_custom_op_symbolic(op, _bicubic_aa_symbolic(), opset)
    try:
        manifest = {"format": ONNX_FORMAT, "version": 1, "family": family, "opset": opset,
                    "exporter": f"torch.onnx TorchScript (dynamo=False), torch {torch.__version__}",
                    **_EXPORTERS[family](model_dir, tmp, weights, opset)}
        manifest["model_config"] = json.loads((model_dir / _config_file(family)).read_text())
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        unregister_custom_op_symbolic(op, opset)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_EXPORTERS: dict[str, Callable[[Path, Path, dict[str, str] | None, int], dict[str, Any]]] = {
    "honestface": _honestface_export, "vspbfr": _vspbfr_export}
