#!/usr/bin/env python
"""Quickstart: the library's main job on real faces that ship inside installed packages.

    bash scripts/quickstart.sh                 # creates .venv, installs, runs this
    python scripts/quickstart.py --size 256    # directly, inside the venv

Today it runs the face-preparation stage every later stage starts from: detect every face of the bundled photos
(skimage astronaut, matplotlib Grace Hopper, insightface's six-person group photo), predict 68 landmarks, write
FFHQ-aligned crops with landmark sidecars and region masks, compare identities with the bundled dlib embedding
(each face against a mirrored copy of itself and against everyone else), paste the crops back into the photos
to check the round trip, and write `report.md` with pictures. Training, restoration and evaluation join it as
they land. Everything runs offline on CPU in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401  (repo root on sys.path)
import cv2
import numpy as np

from honestface.data.samples import load_sample
from honestface.face import (
    build_detector,
    build_identity_encoder,
    build_landmarker,
    extract_faces,
    pairwise_cosine,
    paste_back,
    region_masks,
)
from honestface.io import write_image

PHOTOS = ("astronaut", "grace_hopper", "group_t1")
MARKER = "<!-- honestface quickstart report -->"
REGION_COLOURS = {"skin": (255, 200, 150), "brows": (120, 60, 20), "eyes": (40, 120, 255), "nose": (255, 230, 0),
                  "lips": (230, 30, 60), "inner_mouth": (90, 0, 40)}


def check_output_dir(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not an earlier quickstart output."""
    if out.exists() and any(out.iterdir()):
        report = out / "report.md"
        if not (report.is_file() and MARKER in report.read_text(errors="ignore")):
            raise SystemExit(f"error: {out} exists and is not a quickstart output folder; pass another --output")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def mask_overlay(crop: np.ndarray, masks: dict[str, np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """The crop with coloured regions and the landmark points drawn on it: (S, S, 3) uint8."""
    out = crop.astype(np.float32)
    for name, colour in REGION_COLOURS.items():
        alpha = 0.45 * masks[name][..., None]
        out = out * (1 - alpha) + np.array(colour, np.float32) * alpha
    out = out.clip(0, 255).astype(np.uint8)
    radius = max(1, crop.shape[0] // 200)
    for x, y in landmarks:
        cv2.circle(out, (int(round(x)), int(round(y))), radius, (0, 255, 0), -1, cv2.LINE_AA)
    return out


def contact_sheet(tiles: list[np.ndarray], columns: int = 4, tile: int = 192) -> np.ndarray:
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA)
    return sheet


def identity_check(encoder, landmarker, faces: list) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of every crop and of its mirror image; returns (similarity (N, N), mirrored-vs-self (N,))."""
    crops = [f.crop for f in faces]
    flipped = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    emb = np.concatenate([encoder.embed_image(c, f.crop_landmarks) for c, f in zip(crops, faces)])  # (N, 128)
    flip_emb = []
    for c, f in zip(flipped, faces):
        x0, y0 = f.crop_landmarks.min(0)
        x1, y1 = f.crop_landmarks.max(0)
        box = np.array([[c.shape[1] - x1, y0, c.shape[1] - x0, y1]])  # the landmark box, mirrored
        flip_emb.append(encoder.embed_image(c, landmarker.predict(c, box)[0]))
    sim = pairwise_cosine(np.concatenate(flip_emb), emb)  # (N mirrored, N originals)
    return sim, np.diag(sim).copy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/quickstart.py", description=__doc__.split("\n\n")[2])
    parser.add_argument("--output", default="outputs/quickstart", help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="aligned crop size in pixels (default: %(default)s)")
    parser.add_argument("--detector", default="mtcnn", choices=("mtcnn", "dlib"), help="bundled face detector")
    args = parser.parse_args(argv)
    if args.size < 64 or args.size % 8:
        parser.error(f"--size must be a multiple of 8 and at least 64, got {args.size}")
    out = Path(args.output)
    check_output_dir(out)
    t0 = time.time()

    # 1. Models: all bundled, offline.
    detector = build_detector(args.detector, threshold=0.9) if args.detector == "mtcnn" else build_detector("dlib")
    landmarker = build_landmarker("dlib68")
    encoder = build_identity_encoder("dlib")

    # 2. Detect, predict landmarks, align; write crops, sidecars and region-mask overlays.
    all_faces, names, tiles, pasted_rows, sidecar = [], [], [], [], {}
    for photo_name in PHOTOS:
        photo = load_sample(photo_name)  # (H, W, 3) uint8
        faces = extract_faces(photo, detector, landmarker, size=args.size, template="ffhq", rule="all")
        for i, face in enumerate(faces):
            name = f"{photo_name}_{i}"
            write_image(out / "faces" / f"{name}.png", face.crop, overwrite=True)
            masks = region_masks(face.crop_landmarks, face.scheme, face.crop.shape, feather=args.size / 256)
            tiles.append(mask_overlay(face.crop, masks, face.crop_landmarks))
            sidecar[name] = {"photo": photo_name, "box": face.detection.box.round(2).tolist(),
                             "score": round(float(face.detection.score), 4), "matrix": face.matrix.tolist(),
                             "scheme": face.scheme, "landmarks": face.crop_landmarks.round(2).tolist()}
            all_faces.append(face)
            names.append(name)

        # 3. Paste the unmodified crops back: the photo must come back (PSNR inside, untouched outside).
        if faces:
            back, mask = paste_back(photo, [f.crop for f in faces], np.stack([f.matrix for f in faces]),
                                    return_mask=True)
            inside = mask > 0
            pasted_rows.append((photo_name, len(faces), psnr(back[inside], photo[inside]),
                                int(np.count_nonzero((back != photo).any(-1) & ~inside))))
            write_image(out / "pasted" / f"{photo_name}.png", back, overwrite=True)
    if not all_faces:
        raise SystemExit("error: no face was found in the bundled photos; is the detector installed correctly?")
    (out / "faces" / "landmarks.json").write_text(json.dumps(sidecar, indent=1))
    write_image(out / "overview.png", contact_sheet(tiles), overwrite=True)

    # 4. Identity: each mirrored face should be nearest to its own original.
    sim, self_sim = identity_check(encoder, landmarker, all_faces)
    nearest_ok = int(np.sum(sim.argmax(1) == np.arange(len(names))))

    # 5. Report.
    lines = [MARKER, "# honestface quickstart", "",
             f"{len(all_faces)} faces found in {len(PHOTOS)} bundled photos with the `{args.detector}` detector, "
             f"aligned to the FFHQ template at {args.size}x{args.size} with dlib 68-point landmarks "
             f"({time.time() - t0:.1f} s on this machine).", "",
             "![faces with region masks and landmarks](overview.png)", "",
             "## Identity (dlib 128-D embedding, cosine similarity)", "",
             f"Each face's mirror image is nearest to its own original for **{nearest_ok} / {len(names)}** faces.", "",
             "| face | vs. own mirror | best other face | other |", "|---|---|---|---|"]
    for i, n in enumerate(names):
        others = sim[i].copy()
        others[i] = -np.inf
        j = int(others.argmax())
        lines.append(f"| {n} | {self_sim[i]:.3f} | {names[j]} | {sim[i, j]:.3f} |")
    lines += ["", "## Paste-back round trip (unmodified crops pasted into the photo)", "",
              "| photo | faces | PSNR inside the paste mask | changed pixels outside the mask |", "|---|---|---|---|"]
    lines += [f"| {p} | {n} | {v:.1f} dB | {c} |" for p, n, v, c in pasted_rows]
    lines += ["", "Files: `faces/*.png` (aligned crops), `faces/landmarks.json` (boxes, matrices, crop landmarks), "
              "`pasted/*.png` (round trip), `overview.png`.", ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines[1:]))
    print(f"\nreport: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
