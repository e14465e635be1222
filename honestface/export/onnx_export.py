"""ONNX export of a saved HonestFace model folder: every inference graph (`honestface.export.graphs`) as one .onnx file with a dynamic batch, each validated with `onnx.checker`, plus
`onnx_manifest.json` so `honestface.export.OnnxPipeline` runs the export without the torch model folder.

Manifest (`MANIFEST_FILE`): format "honestface-onnx", version, family ("honestface" | "vspbfr"), opset, exporter,
native settings (resolution, resize, timestep), per graph its file and input / output names, the family's runtime
facts (latent shape, encode mode, use_ide, blind mode) and the torch model folder's own config
(`model_config`, as saved by `save_pretrained`).

Our choices: the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`): it traces the diffusers UNet / VAE
and the HF CLIP tower at the fixed face resolution without graph breaks, and its custom-symbolic hook lets us map
CLIP's antialiased bicubic resize (`aten::_upsample_bicubic2d_aa`, not exported by torch) onto ONNX Resize (opset
18, antialias=1, cubic a = -0.5, exclude_outside=1), which matches torch to ~1e-5. Opset 18. The LoRA is merged
into the UNet before export (one plain UNet graph). The output folder is written atomically: files go to a
temporary sibling folder that replaces the output only after every graph passed the checker; an existing export
is replaced only with `overwrite=True`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["MANIFEST_FILE", "ONNX_FORMAT", "OPSET", "export_onnx", "model_family", "read_manifest"]

MANIFEST_FILE = "onnx_manifest.json"
ONNX_FORMAT = "honestface-onnx"
OPSET = 18
FAMILIES = ("honestface",)  # families with an ONNX export (VSPBFR: not yet)


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
        if not (Path(folder) / graph["file"]).is_file():
            raise FileNotFoundError(f"{folder}: graph {name!r} is missing its file {graph['file']}; export again")
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


def export_graph(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict[str, dict[int, str]], opset: int = OPSET) -> list[str]:
    """Export one graph to `path` and validate it with the onnx checker; returns the graph's actual input names
    (the exporter drops inputs the graph does not use)."""
    import onnx

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the TorchScript exporter
        torch.onnx.export(module.eval(), args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(str(path))  # by path: also works for graphs with external data (> 2 GB)
    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def _honestface_export(model_dir: Path, tmp: Path, weights: dict[str, str] | None, opset: int) -> dict[str, Any]:
    from honestface.export.graphs import honestface_graphs
    from honestface.models import HonestFace

    model = HonestFace.from_pretrained(model_dir, weights=dict(weights or {}), with_discriminator=False).float()
    model.merge_lora()
    gen = model.generator
    graphs = {}
    for name, (module, args, ins, outs, dyn) in honestface_graphs(model).items():
        used = export_graph(module, args, tmp / f"{name}.onnx", ins, outs, dyn, opset)
        graphs[name] = {"file": f"{name}.onnx", "inputs": used, "outputs": outs}
    r = model.native_settings.resolution
    with torch.no_grad():
        latent = list(gen.vae.encode(torch.zeros(1, 3, r, r)).latent_dist.mean.shape[1:])
    facts = {"latent_shape": latent, "encode_mode": gen.encode_mode, "use_ide": model.use_ide,
             "blind_mode": model.fusion.config.blind_mode if model.use_ide else None}
    return {"native": model.native_settings.to_dict(), "graphs": graphs, "honestface": facts}


def export_onnx(model_dir: str | os.PathLike, output: str | os.PathLike, *, weights: dict[str, str] | None = None,
                opset: int = OPSET, overwrite: bool = False) -> Path:
    """Export the saved HonestFace model folder `model_dir` to the folder `output` (module docstring);
    returns it. `weights`: registry name -> path for frozen parts the folder names by registry entry."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    model_dir, out = Path(model_dir), Path(output)
    family = model_family(model_dir)
    if family not in FAMILIES:
        raise ValueError(f"{model_dir}: ONNX export of {family} models is not supported yet (HonestFace only); "
                         f"run it with the torch pipeline (honestface-infer --model)")
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
                    **_honestface_export(model_dir, tmp, weights, opset)}
        manifest["model_config"] = json.loads((model_dir / "honestface_config.json").read_text())
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        unregister_custom_op_symbolic(op, opset)
        shutil.rmtree(tmp, ignore_errors=True)
    return out
