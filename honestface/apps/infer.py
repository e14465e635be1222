"""Batch inference runner behind `scripts/infer.py`: restore a folder / glob / file of faces, write every output
safely and record what happened to every input in `results.json`.

Task: the HonestFace test-time procedure (arXiv 2505.18469: LQ face + K reference faces of the same person ->
one UNet step) run over a data set, on one process or split across several with `accelerate launch`. The
pipeline itself is `honestface.pipelines.HonestFacePipeline`, or `VSPBFRPipeline` for a VSPBFR model (arXiv
2412.21042); everything here is our choice of run behaviour:

- Model: `model.name=vspbfr` (scripts/infer.py `--arch vspbfr`) loads `model.pretrained` as a VSPBFR folder; with
  the default `model.name=honestface`, a folder holding `vspbfr_config.json` (written by `VSPBFR.save_pretrained`)
  is still run as VSPBFR. VSPBFR is blind: given references are ignored with a warning (every face is "blind").
  `model.pretrained` may be a released model name ("osdface", "vspbfr", `honestface.models.released`): its files
  come from the weights registry (`weights.<name>` or $HONESTFACE_HOME; all missing ones named in one line, exit
  2) and are converted once, after every other check, into a cached folder in `infer.precision`; or a Hugging
  Face Hub id `org/name` (at `model.revision`), taken from the Hub cache (downloaded on first use, first of all:
  the family is read from its files; `honestface.hub`). `results.json` records the name or id as `model` and the
  folder as `model_folder`.

- Inputs: a folder (every image, recursively, `honestface.io.list_images`), a glob (`lq/**/*.png`) or one file.
  Files under the output folder (when `infer.allow_output_in_input` lets it sit inside the input folder) and under
  the references folder are never inputs.
- Outputs: `<output>/<relative path of the input, suffix .png>`, written atomically (`honestface.io.write_image`).
  Every input gets its own name (`infer_plan.plan_outputs`: inputs that would share one, such as `a.jpg` and
  `a.png`, get `a_jpg.png` and `a_png.png`, or `a_jpg_2.png` when that is taken, case-insensitively; the same
  inputs always get the same names); the renamed inputs are listed in `results.json` ("renamed") and logged. An
  output is never an input file. The output folder may not be the input folder or inside it unless
  `infer.allow_output_in_input`. Existing outputs stop the run with one line naming them (exit 2), unless
  `infer.skip_existing` (those inputs are "skipped" and nothing is loaded for them) or `infer.overwrite`. A
  `results.json` already in the output folder is replaced only when a run of this command on the same input wrote
  it (a resume), or with `infer.overwrite`.
- References, `infer.reference_mode=auto`: detected as `InferenceFolderDataset` does (one folder for all, a folder
  per input, a JSON / CSV mapping). An input left without a readable reference while references were given fails
  ("missing references") unless `infer.allow_blind`. `infer.reference_mode=pool`: `infer.references` is a folder
  of many people's faces; the pipeline gives each face the pool faces of its identity (`ReferencePool`).
- Failures are per file and never stop the run: unreadable input, aligned input smaller than
  `infer.min_input_size` (16 px: below that a 512 face would be upscaled > 32x), no face found in photo mode, no
  face big enough (`face.min_size`), missing references, or an error of the pipeline on that file (a batch that
  fails is retried one file at a time so only the culprit fails). Exit code 1 when anything failed.
- Resolution: the model's native one (its saved config: OSDFace 512, VSPBFR its restoration size; never the VAE's
  `sample_size`) unless `infer.resolution` overrides it; `results.json` records the effective `resolution`, its
  `resolution_source` ("model" or "override"), the `resize` and the `timestep`.
- `results.json` (atomically written): run settings, counts, and per input: status ok / failed / skipped, reason,
  seconds (its share of the batch's pipeline time plus its own read / write time), sizes, references and per face
  box, score, restored, reason, references, blind and identity similarities. Each process also keeps its part up
  to date after every batch in `.results.rank<k>.json`; process 0 merges them after `wait_for_everyone`.
- Several processes: `accelerate.PartialState().split_between_processes` gives each process a contiguous slice
  of the input list, so every output is written by exactly one process. `infer.device=auto` is that process's
  device (cuda:<local rank>, or cpu under ACCELERATE_USE_CPU=1).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from honestface.apps.infer_model import (
    _load_pipeline,
    _reference_pool,
    _resolve_device,
    finish_model_setup,
    model_architecture,
    require_keys,
    setup_model,
)
from honestface.apps.infer_plan import (
    InferenceSetupError,
    check_not_inputs,
    check_output,
    check_results_file,
    find_inputs,
    find_references,
    plan_outputs,
    renamed_outputs,
    within,
)
from honestface.io import atomic_write_text, list_images, read_image, write_image

__all__ = [
    "RESULTS_FILE",
    "InferenceSetupError",
    "find_inputs",
    "finish_model_setup",
    "model_architecture",
    "plan_outputs",
    "run_inference",
    "setup_model",
]

RESULTS_FILE = "results.json"
log = logging.getLogger("honestface.apps")


# ---------------------------------------------------------------------------------------------------- running
def _read(record: dict[str, Any], min_size: int | None) -> np.ndarray | None:
    """Read one input -> (H, W, 3) float32, or None with the record marked failed."""
    try:
        image = read_image(record["input"])
    except (OSError, ValueError) as e:
        record.update(status="failed", reason=f"unreadable: {e}")
        return None
    h, w = image.shape[:2]
    record["size"] = [h, w]
    if min_size is not None and min(h, w) < min_size:
        record.update(status="failed", reason=f"too small: {w}x{h}, the shorter side must be >= {min_size}")
        return None
    return image


def _face_record(face: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, (np.ndarray, np.generic)):
            return v.tolist()
        if hasattr(v, "tolist"):
            return v.tolist()
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return {k: plain(getattr(face, k, None)) for k in ("box", "score", "restored", "reason", "references", "blind",
                                                          "output_ref_similarity", "input_ref_similarity")}


def _comparison(lq: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """(H, W, 3) input | restored side by side; the input is resized to the output's height."""
    from PIL import Image

    h, w = restored.shape[:2]
    if lq.shape[:2] != (h, w):
        im = Image.fromarray(np.round(lq * 255).astype(np.uint8))
        lq = np.asarray(im.resize((round(lq.shape[1] * h / lq.shape[0]), h), Image.BICUBIC)) / 255.0
    out = restored.astype(np.float32) / 255.0 if restored.dtype == np.uint8 else restored
    return np.concatenate([lq.astype(np.float32), out], axis=1)


def _restore(pipe: Any, cfg: DictConfig, images: list[np.ndarray], refs: list[Any], seed: int) -> Any:
    icfg = cfg.infer
    if icfg.max_references == 0 or (isinstance(refs, list) and all(r is None for r in refs)):
        refs = None
    return pipe(images, references=refs, mode=icfg.mode, batch_size=icfg.batch_size, color_fix=None if icfg.color_fix == "auto" else icfg.color_fix,
                seed=seed, max_references=max(1, icfg.max_references), min_face_size=cfg.face.min_size,
                ref_threshold=icfg.ref_threshold, upscale=icfg.upscale)


def _finish(record: dict[str, Any], faces: list[Any], image: np.ndarray, lq: np.ndarray, overwrite: bool) -> None:
    record["faces"] = [_face_record(f) for f in faces]
    if record["mode"] == "photo":
        if not faces:
            record.update(status="failed", reason="no face found")
            return
        if not any(bool(getattr(f, "restored", True)) for f in faces):
            why = "; ".join(sorted({str(getattr(f, "reason", None) or "not restored") for f in faces}))
            record.update(status="failed", reason=f"no face restored ({why})")
            return
    write_image(record["output"], image, overwrite=overwrite)
    if record.get("comparison"):
        write_image(record["comparison"], _comparison(lq, image), overwrite=overwrite)
    record.update(status="ok", reason=None)


def _run_batch(pipe: Any, cfg: DictConfig, batch: list[dict[str, Any]], pool: Any, cache: dict) -> None:
    """Restore the batch's readable inputs and write their outputs; every record ends ok or failed."""
    icfg = cfg.infer
    todo: list[tuple[dict[str, Any], np.ndarray, Any]] = []
    for rec in batch:
        t0 = time.perf_counter()
        lq = _read(rec, icfg.min_input_size if icfg.mode == "aligned" else None)
        ref: Any = pool
        if lq is not None and pool is None and rec["references"]:
            try:
                ref, rec["references"] = _reference_pool(pipe, cfg, rec["references"], cache)
            except (OSError, ValueError) as e:
                rec.update(status="failed", reason=f"references: {e}")
                lq = None
        if lq is not None and pool is None and ref is None and icfg.references is not None \
                and icfg.max_references > 0 and not icfg.allow_blind:
            rec.update(status="failed", reason=f"missing references: none found for this input in "
                                               f"{icfg.references} (infer.allow_blind=true restores it blind)")
            lq = None
        rec["seconds"] = time.perf_counter() - t0
        if lq is not None:
            todo.append((rec, lq, ref))
    if not _attempt(pipe, cfg, todo, pool) and len(todo) > 1:
        for item in todo:  # the batch failed: one file at a time, so only the culprit fails
            _attempt(pipe, cfg, [item], pool)


def _attempt(pipe: Any, cfg: DictConfig, group: list[tuple[dict[str, Any], np.ndarray, Any]], pool: Any) -> bool:
    """One pipeline call for `group` and the writing of its outputs; False when the pipeline raised."""
    if not group:
        return True
    icfg = cfg.infer
    t0 = time.perf_counter()
    try:
        refs = pool if pool is not None else [r for _, _, r in group]
        out = _restore(pipe, cfg, [lq for _, lq, _ in group], refs, icfg.seed)
    except Exception as e:  # noqa: BLE001 (a failing file must not stop the run)
        if len(group) == 1:
            group[0][0].update(status="failed", reason=f"{type(e).__name__}: {' '.join(str(e).split())}")
        return False
    share = (time.perf_counter() - t0) / len(group)
    for (rec, lq, _), image, faces in zip(group, out.images, out.faces):
        t1 = time.perf_counter()
        try:
            _finish(rec, faces, image, lq, icfg.overwrite)
        except (OSError, ValueError) as e:
            rec.update(status="failed", reason=f"cannot write output: {e}")
        rec["seconds"] += share + time.perf_counter() - t1
    return True


def _summary(cfg: DictConfig, records: list[dict[str, Any]], started: float, reference_mode: str,
             num_processes: int, model: str) -> dict[str, Any]:
    from honestface.models.native import read_native_settings

    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "skipped")}
    try:
        if cfg.infer.onnx is not None:
            from honestface.export import read_manifest

            native = dict(read_manifest(cfg.infer.onnx)["native"])
        else:
            native = read_native_settings(cfg.model.pretrained).to_dict()
    except (OSError, ValueError, KeyError):  # nothing was loaded (all skipped) from a folder without a config
        native = {"resolution": None, "resize": None, "timestep": None}
    override = cfg.infer.resolution is not None
    return {"version": 1, "input": cfg.infer.input, "output": cfg.infer.output, "model": model,
            "model_folder": cfg.model.pretrained, "onnx": cfg.infer.onnx,
            "architecture": model_architecture(cfg),
            "resolution": int(cfg.infer.resolution) if override else native["resolution"],
            "resolution_source": "override" if override else "model", "resize": native["resize"],
            "timestep": native["timestep"],
            "mode": cfg.infer.mode, "references": cfg.infer.references, "reference_mode": reference_mode,
            "device": cfg.infer.device, "precision": cfg.infer.precision, "batch_size": cfg.infer.batch_size,
            "seed": cfg.infer.seed, "num_processes": num_processes, "seconds": round(time.time() - started, 3),
            "counts": counts, "renamed": {r["relpath"]: r["output"] for r in records if r.get("renamed")},
            "files": records}


def _setup(cfg: DictConfig) -> tuple[list[dict[str, Any]], str, Path]:
    """Check everything that can be checked before loading a model -> (records, reference mode, output folder)."""
    icfg = cfg.infer
    require_keys(cfg)
    pipeline, released = setup_model(cfg)
    if icfg.reference_mode == "pool" and (icfg.references is None or not Path(icfg.references).is_dir()):
        raise InferenceSetupError("infer.reference_mode=pool needs infer.references to be a folder of faces")
    if icfg.reference_mode == "pool" and not list_images(icfg.references):
        raise InferenceSetupError(f"no image files in the reference pool {icfg.references}")
    base, files, protected = find_inputs(icfg.input)
    output = Path(icfg.output).expanduser()
    check_output(protected, output, icfg.allow_output_in_input, Path(icfg.input).expanduser().is_file())
    if not icfg.overwrite:
        check_results_file(output / RESULTS_FILE, icfg.input)
    excluded = [output.resolve()] + ([Path(icfg.references).resolve()] if icfg.references else [])
    files = [f for f in files if not any(within(f.resolve(), x) for x in excluded)]
    if not files:
        raise InferenceSetupError(f"no input images left in {icfg.input} once the output / references are excluded")
    plan = plan_outputs(files, base, output, icfg.save_comparison)
    check_not_inputs(files, plan)
    renamed = renamed_outputs(plan, output)
    existing = [p for _, o, c in plan for p in (o, c) if p is not None and p.exists()]
    if existing and not (icfg.skip_existing or icfg.overwrite):
        named = ", ".join(str(p) for p in existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise InferenceSetupError(f"{len(existing)} output file(s) already exist: {named} (pass --skip-existing to "
                                  f"leave them, or --overwrite to replace them)")
    if icfg.reference_mode == "pool":
        how, refs = "pool", [[] for _ in files]
    else:
        try:
            how, refs = find_references(icfg, base, files)
        except (OSError, ValueError) as e:
            raise InferenceSetupError(str(e)) from None
    finish_model_setup(cfg, pipeline, released)  # last: the one slow step (converting once) for a right command
    records = []
    for i, (f, (rel, out, comp), ref) in enumerate(zip(files, plan, refs)):
        done = icfg.skip_existing and out.exists() and (comp is None or comp.exists())
        records.append({"index": i, "input": str(f), "relpath": rel, "output": str(out),
                        "comparison": None if comp is None else str(comp), "mode": icfg.mode,
                        "renamed": rel in renamed,
                        "status": "skipped" if done else "pending", "reason": "output exists" if done else None,
                        "seconds": 0.0, "size": None, "references": [str(r) for r in ref], "faces": []})
    if renamed and int(os.environ.get("RANK", "0")) == 0:  # the run will start: say which names changed
        shown = ", ".join(f"{k} -> {v}" for k, v in list(renamed.items())[:3])
        log.warning("%d input(s) would share an output name; renamed: %s%s (all listed in %s)", len(renamed), shown,
                    f" and {len(renamed) - 3} more" if len(renamed) > 3 else "", output / RESULTS_FILE)
    return records, how, output


def run_inference(cfg: DictConfig) -> int:
    """Run `infer.*` (+ model.pretrained, weights, face.*) -> exit code: 0 all done, 1 some failed, 2 bad setup."""
    started = time.time()
    from honestface.apps.infer_video import is_video_input, run_video_inference

    if is_video_input(cfg):
        return run_video_inference(cfg)
    cfg = copy.deepcopy(cfg)  # _setup drops references given to a (blind) VSPBFR model, resolves a released name
    model = cfg.model.pretrained
    try:
        records, how, output = _setup(cfg)  # before the heavy imports: a bad command line fails fast
    except InferenceSetupError as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    from accelerate import PartialState
    from tqdm.auto import tqdm

    state = PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes"))
    state.wait_for_everyone()  # nobody writes before every process has checked the existing outputs
    icfg = cfg.infer
    with state.split_between_processes(records) as mine:
        mine = list(mine)
    part = output / f".results.rank{state.process_index}.json"
    todo = [r for r in mine if r["status"] == "pending"]
    bar = tqdm(total=len(mine), desc="restoring", unit="img", disable=not state.is_local_main_process)
    bar.update(len(mine) - len(todo))
    if todo:
        pipe = _load_pipeline(cfg, _resolve_device(icfg.device, state))
        if icfg.batch_size is None:  # recorded in results.json as used
            icfg.batch_size = pipe.default_batch_size
        pool = None
        if icfg.reference_mode == "pool":
            files = [str(p) for p in list_images(icfg.references)]
            pool = _reference_pool(pipe, cfg, files, {})[0]
            if pool is None:
                print(f"error: no readable reference image in the pool {icfg.references}", file=sys.stderr)
                return 2
        cache: dict[str, Any] = {}
        step = icfg.batch_size if icfg.mode == "aligned" else 1
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            _run_batch(pipe, cfg, batch, pool, cache)
            for rec in batch:
                rec["seconds"] = round(rec["seconds"], 4)
            atomic_write_text(part, json.dumps(mine, indent=1))
            bar.update(len(batch))
    else:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(part, json.dumps(mine, indent=1))
    bar.close()
    state.wait_for_everyone()
    failed = any(r["status"] == "failed" for r in mine)
    if not state.is_main_process:
        return int(failed)
    parts = [output / f".results.rank{k}.json" for k in range(state.num_processes)]
    merged = sorted((r for p in parts for r in json.loads(p.read_text())), key=lambda r: r["index"])
    summary = _summary(cfg, merged, started, how, state.num_processes, model)
    atomic_write_text(output / RESULTS_FILE, json.dumps(summary, indent=1) + "\n")
    for p in parts:
        p.unlink(missing_ok=True)
    c = summary["counts"]
    print(f"restored {c['ok']}, failed {c['failed']}, skipped {c['skipped']} -> {output / RESULTS_FILE}",
          file=sys.stderr)
    for r in merged:
        if r["status"] == "failed":
            print(f"failed: {r['input']}: {r['reason']}", file=sys.stderr)
    return 1 if c["failed"] else 0
