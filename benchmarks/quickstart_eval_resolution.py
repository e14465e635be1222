"""Does evaluating the quickstart's faces at a larger size change its landmark and identity verdicts?

    python benchmarks/quickstart_eval_resolution.py outputs/quickstart                 # sizes 64,128,256
    python benchmarks/quickstart_eval_resolution.py outputs/quickstart --sizes 64,512

The bundled detectors and landmarkers (dlib HOG + 68 points, dlib's recogniser) were made for faces larger than the
quickstart's 64 px crops. This re-evaluates a finished quickstart folder: the ground truth, the LQ inputs and the
restorations are upsampled together (bicubic) to each size and scored with the quickstart's metrics, and the
restoration is compared with the input per face (gain, bootstrap 95% interval, faces better, verdict:
`honestface.apps.quickstart.report.compare_methods`). Prints one JSON object: per size, per metric that comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def upsample_folder(src: Path, dst: Path, size: int) -> Path:
    """Every image under `src` resized to size x size (bicubic), same relative paths, under `dst`."""
    import cv2
    import numpy as np

    from honestface.io import list_images, read_image, write_image

    for path in list_images(src):
        img = read_image(path)
        big = cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
        write_image(dst / path.relative_to(src), np.clip(big, 0.0, 1.0))
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/quickstart_eval_resolution.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("quickstart", help="a finished quickstart output folder (holds summary.json)")
    p.add_argument("--sizes", default="64,128,256")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from honestface.apps.quickstart.report import LQ, OURS, compare_methods
    from honestface.apps.quickstart.run import QUICKSTART_METRICS
    from honestface.metrics.evaluate import evaluate_folders

    root = Path(args.quickstart)
    if not (root / "summary.json").is_file():
        p.error(f"{root} holds no finished quickstart (no summary.json)")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    folders = {"gt": root / "data/test/hq", "lq": root / "data/test/lq", "restored": root / "restored"}
    results = {}
    with tempfile.TemporaryDirectory(prefix="eval_resolution_") as tmp:
        for size in sizes:
            f = {k: upsample_folder(v, Path(tmp) / str(size) / k, size) for k, v in folders.items()}
            ev = evaluate_folders({LQ: f["lq"], OURS: f["restored"]}, f["gt"], refs=f["gt"], lq=f["lq"],
                                  metrics=list(QUICKSTART_METRICS), device=args.device, identity="dlib")
            results[str(size)] = compare_methods(ev, [m for m in ev.columns if "ref_" not in m])  # vs the GT only
    print(json.dumps({"quickstart": str(root), "sizes": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
