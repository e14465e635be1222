"""The web demo (`honestface-demo`, `python scripts/demo.py`): restore a photo in the browser with Gradio.

Upload a whole photo or an aligned face, optionally reference photos of the person, pick a model (the folders or
Hub ids the command was given, and the quickstart's export when it exists), a device and a dtype; the page shows
the restored photo next to the input (a before/after slider), the detected faces with their boxes, a per-face
table of identity similarity to the references and the reference-honesty gain, and a PNG to download.

The work is the library's: `HonestFacePipeline` / `VSPBFRPipeline.from_pretrained` (a folder or a Hub id), their
photo / aligned modes and per-face `FaceInfo`. The honesty columns are the pipeline's `output_ref_similarity`
(mean cosine of the output face to the chosen references, the pipeline's identity encoder, dlib by default) and
`input_ref_similarity` (the same for the input face); their difference is the reference-honesty gain of
`honestface.metrics.identity.IdentityMetrics.reference_honesty`, measured on the pipeline's aligned crops.

Our choices:
- Every failure a user can cause (not an image, no face, a too large image, a wrong model folder) becomes one line
  in the page's status box, never a traceback; an unexpected error is logged with its traceback on the server
  console and shown as one line too, and the server keeps serving.
- Input kind "auto": a square image whose one detected face sits on the FFHQ template's five points (within
  `ALIGNED_TOLERANCE` of the side) is an aligned face; anything else with a face is a photo; no face is an error.
- References follow the same rule: aligned crops when every one is, else photos whose largest face is used (the
  pipeline's own rule, "square means aligned", would misread a square photo).
- Images over `max_pixels` (default 40 megapixels) are refused before they are decoded.
- One model is kept loaded (the last one used); choosing another loads it and frees the previous one.
- Gradio is imported only by `build_demo`: the rest of the module (what the tests and the console command's
  `--help` use) runs without it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from honestface.log import get_logger

__all__ = ["DTYPES", "INPUT_KINDS", "MAX_PIXELS", "QUICKSTART_MODEL", "DemoError", "DemoResult", "ModelCache",
           "available_models", "build_demo", "read_upload", "restore"]

log = get_logger("demo")
QUICKSTART_MODEL = Path("outputs/quickstart/runs/honestface/final")  # honestface-quickstart's default export
MAX_PIXELS = 40_000_000
INPUT_KINDS = ("auto", "photo", "aligned")
DTYPES = ("float32", "bfloat16", "float16")
ALIGNED_TOLERANCE = 0.08
TABLE_HEADERS = ["face", "box x0, y0, x1, y1", "detector score", "restored", "references used",
                 "output vs references", "input vs references", "honesty gain"]
NO_MODEL = ("No model to run: start the demo with --model DIR_OR_HUB_ID (a HonestFace or VSPBFR folder, or a "
            "Hugging Face Hub id), or train the tiny model first with honestface-quickstart (it exports "
            f"{QUICKSTART_MODEL}).")


class DemoError(ValueError):
    """A problem with what the user gave (shown in the page as one line)."""


@dataclass
class DemoResult:
    """One restoration: the input and output (H, W, 3) uint8, the mode used, the input with the face boxes drawn,
    one table row per face, the saved PNG, a one-line summary and the pasted faces' mask (H, W) (photo mode; None
    in aligned mode)."""

    input: np.ndarray
    output: np.ndarray
    mode: str
    boxes: np.ndarray
    rows: list[list[Any]] = field(default_factory=list)
    path: Path | None = None
    message: str = ""
    mask: np.ndarray | None = None


def available_models(models: Sequence[str] = (), quickstart: str | Path | None = QUICKSTART_MODEL) -> list[str]:
    """The model choices: the given folders / Hub ids, then the quickstart's export when it exists."""
    from honestface.pipelines import family_of_folder

    choices = [str(m) for m in models]
    if quickstart is not None and family_of_folder(quickstart) is not None and str(quickstart) not in choices:
        choices.append(str(quickstart))
    return choices


def read_upload(path: str | Path | None, max_pixels: int = MAX_PIXELS, what: str = "photo") -> np.ndarray:
    """An uploaded file -> RGB (H, W, 3) uint8 (EXIF orientation applied); DemoError when it is not a readable image
    or has more than `max_pixels` pixels (checked from the header, before decoding)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path is None:
        raise DemoError(f"no {what} uploaded: drop an image file on the {what} box")
    name = Path(path).name
    try:
        with Image.open(path) as image:
            w, h = image.size
            if w * h > max_pixels:
                raise DemoError(f"{what} {name} is {w} x {h} = {w * h / 1e6:.0f} megapixels; the demo takes up to "
                                f"{max_pixels / 1e6:.0f} (resize it first)")
            return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
    except UnidentifiedImageError:
        raise DemoError(f"{what} {name} is not an image (upload a JPEG, PNG or WebP file)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise DemoError(f"{what} {name} could not be read as an image ({' '.join(str(err).split())})") from None


class ModelCache:
    """Loads a restoration pipeline by (model, device, dtype) and keeps the last one."""

    def __init__(self, detector: str = "mtcnn", identity: str = "dlib") -> None:
        self.detector, self.identity = detector, identity
        self.key: tuple[str, str, str] | None = None
        self.pipeline: Any = None

    def get(self, model: str | None, device: str = "cpu", dtype: str = "float32") -> Any:
        import torch

        if not model:
            raise DemoError(NO_MODEL)
        if dtype not in DTYPES:
            raise DemoError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        key = (str(model), str(device), dtype)
        if key != self.key:
            self.pipeline = self.key = None  # free the previous model before loading the next
            self.pipeline = self._load(str(model), torch.device(device), getattr(torch, dtype))
            self.key = key
        return self.pipeline

    def _load(self, model: str, device: Any, dtype: Any) -> Any:
        from honestface.hub import resolve_model_dir
        from honestface.pipelines import PIPELINES, family_of_folder, pipeline_class
        from honestface.released_table import RELEASED_MODELS, is_released_name

        if is_released_name(model):
            family = RELEASED_MODELS[model].family
        else:
            folder = resolve_model_dir(model)
            family = family_of_folder(folder)
            if family is None:
                files = " or ".join(pipeline_class(f).model_config_file for f in PIPELINES)
                raise DemoError(f"{model} is not a HonestFace or VSPBFR model folder (no {files}); pass a saved "
                                "model folder or a Hub id with --model")
            model = str(folder)
        opts = {"identity": self.identity} if family == "honestface" else {}
        pipe = pipeline_class(family).from_pretrained(model, detector=self.detector, device=device, dtype=dtype,
                                                      **opts)
        pipe.merge_lora()
        return pipe


def _is_aligned(image: np.ndarray, detections: list[Any]) -> bool:
    from honestface.pipelines.reference_pool import ffhq_points

    h, w = image.shape[:2]
    if h != w or len(detections) != 1 or detections[0].points5 is None:
        return False
    error = np.linalg.norm(np.asarray(detections[0].points5, np.float64) - ffhq_points(h, w), axis=1).max()
    return bool(error <= ALIGNED_TOLERANCE * w)


def draw_boxes(image: np.ndarray, boxes: Sequence[Sequence[float] | None]) -> np.ndarray:
    """A copy of `image` with each box drawn and numbered like the table's rows."""
    import cv2

    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 300))
    for i, box in enumerate(boxes, 1):
        if box is None:
            continue
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), thick)
        cv2.putText(out, str(i), (x0 + 2, max(y0 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (0, 255, 0), thick)
    return out


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def face_rows(faces: Sequence[Any]) -> list[list[Any]]:
    """One table row per FaceInfo (TABLE_HEADERS); similarities only for faces restored with references."""
    rows = []
    for i, f in enumerate(faces, 1):
        gain = None if f.output_ref_similarity is None or f.input_ref_similarity is None else \
            f.output_ref_similarity - f.input_ref_similarity
        box = "whole image" if f.box is None else ", ".join(f"{v:.0f}" for v in f.box)
        used = ", ".join(f.references) or (f.reason or "none (blind)")
        rows.append([i, box, _number(f.score), "yes" if f.restored else f"no: {f.reason}", used,
                     _number(f.output_ref_similarity), _number(f.input_ref_similarity), _number(gain)])
    return rows


def restore(pipe: Any, image: np.ndarray, references: Sequence[np.ndarray] = (), kind: str = "auto", seed: int = 0,
            output_dir: str | Path | None = None, progress: Callable[[float, str], None] | None = None,
            reference_names: Sequence[str] | None = None) -> DemoResult:
    """Restore `image` (RGB uint8) with `pipe`: detect its faces, pick the mode (`kind`), restore with the
    references (photos of the person, or aligned crops; named in the table by `reference_names`), and save the
    output as PNG in a new folder under `output_dir` (default: the system's temporary folder)."""
    from PIL import Image

    say = progress or (lambda fraction, text: None)
    start = time.perf_counter()
    if kind not in INPUT_KINDS:
        raise DemoError(f"input kind {kind!r} is not one of {', '.join(INPUT_KINDS)}")
    detections = []
    if kind != "aligned":
        say(0.2, "detecting faces")
        detections = pipe.use_detector("mtcnn").detect(image)
        if not detections:
            raise DemoError("no face found in the photo (upload a photo with a visible face, or choose the input "
                            "kind 'aligned' for an FFHQ-aligned face crop)")
    mode = "aligned" if kind == "aligned" or (kind == "auto" and _is_aligned(image, detections)) else "photo"
    say(0.4, f"restoring ({mode} mode, {len(references)} reference(s))")
    blind = not references or not pipe.uses_references
    pool = None
    if not blind:  # the same rule as the input's: aligned crops only when every one sits on the template
        from honestface.pipelines import ReferencePool

        detector = pipe.use_detector("mtcnn")
        aligned = all(_is_aligned(r, detector.detect(r)) for r in references)
        names = list(reference_names or [f"reference {i}" for i in range(1, len(references) + 1)])
        pool = ReferencePool(list(references), pipe.identity_encoder, detector, ids=names, aligned=aligned)
    out = pipe(image, pool, mode=mode, seed=seed)
    faces = out.faces[0]
    restored = out.images[0]
    say(0.9, "saving")
    folder = Path(tempfile.mkdtemp(prefix="honestface-demo-", dir=output_dir))
    path = folder / "restored.png"
    Image.fromarray(restored).save(path)
    done = sum(f.restored for f in faces)
    note = "" if blind or any(not f.blind for f in faces) else "; no reference matched a face, restored blind"
    message = f"Restored {done} of {len(faces)} face(s) in {mode} mode ({time.perf_counter() - start:.1f} s){note}."
    if references and not pipe.uses_references:
        message += f" {pipe.family_label} is blind: the references were not used."
    return DemoResult(input=image, output=restored, mode=mode, boxes=draw_boxes(image, [f.box for f in faces]),
                      rows=face_rows(faces), path=path, message=message,
                      mask=out.masks[0] if out.masks else None)


def build_demo(models: Sequence[str] = (), quickstart: str | Path | None = QUICKSTART_MODEL,
               devices: Sequence[str] | None = None, max_pixels: int = MAX_PIXELS,
               output_dir: str | Path | None = None, cache: ModelCache | None = None) -> Any:
    """The Gradio Blocks of the demo (launch it with `.launch(...)`). models: folders / Hub ids to offer (the
    quickstart's export is added when it exists); devices: default "cpu" plus "cuda" when available."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports from a local demo
    import gradio as gr
    import torch

    choices = available_models(models, quickstart)
    devices = list(devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]))
    cache = cache or ModelCache()

    tracker = gr.Progress()  # Gradio finds the progress bar by this default value

    def run(photo: str | None, refs: list[str] | None, model: str | None, device: str, dtype: str, kind: str,
            seed: float, progress: Any = tracker) -> tuple:
        empty = (None, None, None, None)  # compare, boxes, table, download
        try:
            image = read_upload(photo, max_pixels)
            references = [read_upload(r, max_pixels, "reference") for r in refs or []]
            progress(0.05, desc="loading the model")
            pipe = cache.get(model, device, dtype)
            res = restore(pipe, image, references, kind, int(seed or 0), output_dir,
                          progress=lambda f, text: progress(f, desc=text),
                          reference_names=[Path(r).name for r in refs or []])
        except DemoError as err:
            return (f"**Error:** {err}", *empty)
        except (ValueError, OSError, RuntimeError) as err:  # a model or device that cannot be used, a bad file
            log.warning("demo request failed", exc_info=err)
            return (f"**Error:** {' '.join(str(err).split()) or type(err).__name__}", *empty)
        except Exception as err:  # a bug: the page gets one line, the console the traceback, the server goes on
            log.error("demo request failed unexpectedly", exc_info=err)
            text = " ".join(str(err).split())
            return (f"**Error:** unexpected {type(err).__name__} (traceback in the demo's console): {text}", *empty)
        return (res.message, (res.input, res.output), res.boxes, res.rows, str(res.path))

    with gr.Blocks(title="HonestFace demo") as demo:
        gr.Markdown("# HonestFace: honest face restoration\nUpload a photo (or an aligned face) and, optionally, "
                    "reference photos of the same person. The table shows how close each restored face is to the "
                    "references, and how much closer than the input it got (the honesty gain).")
        with gr.Row():
            with gr.Column():
                photo = gr.File(label="Photo or aligned face", type="filepath", elem_id="photo")
                refs = gr.File(label="Reference photos of the person (optional)", file_count="multiple",
                               type="filepath", elem_id="references")
                model = gr.Dropdown(choices, value=choices[0] if choices else None, allow_custom_value=True,
                                    label="Model (or type a model folder / Hub id)", elem_id="model")
                with gr.Row():
                    device = gr.Dropdown(devices, value=devices[0], label="Device")
                    dtype = gr.Dropdown(list(DTYPES), value="float32", label="dtype")
                with gr.Row():
                    kind = gr.Radio(list(INPUT_KINDS), value="auto", label="Input kind")
                    seed = gr.Number(0, precision=0, label="Seed")
                button = gr.Button("Restore", variant="primary", elem_id="restore")
            with gr.Column():
                status = gr.Markdown(NO_MODEL if not choices else "Upload a photo and press Restore.",
                                     elem_id="status")
                compare = gr.ImageSlider(label="Before / after", format="png", elem_id="compare")
                download = gr.File(label="Download the restored image (PNG)", elem_id="download")
        with gr.Row():
            boxes = gr.Image(label="Detected faces", format="png", interactive=False, height=320, scale=1,
                             elem_id="boxes")
            table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, scale=2, elem_id="faces",
                                 label="Faces: identity similarity to the references (mean cosine; gain = output - "
                                       "input)")
        button.click(run, [photo, refs, model, device, dtype, kind, seed], [status, compare, boxes, table, download])
    return demo
