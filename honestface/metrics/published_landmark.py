"""LMD exactly as VQFR's published script computes it: AWing FAN landmarks of whole aligned images, mean pixel error.

Source: TencentARC/VQFR:metric_paper/calculate_landmark_distance.py, with the network and the point extraction of
TencentARC/VQFR:vqfr/archs/awing_arch.py (`FAN.get_landmarks`, `calculate_points`) and the loader of
TencentARC/VQFR:vqfr/archs/__init__.py (`init_alignment_model`: `FAN()` = 4 hourglasses, 98 WFLW points,
`alignment_WFLW_4HG.pth` loaded strictly from its 'state_dict', eval mode). The steps reproduced here:

1. the restored and the ground-truth folders are each listed and sorted, and paired in that order;
2. each image is read with `cv2.imread` (BGR, 8 bit), resized to 256x256 by `cv2.resize` with its default
   (bilinear) interpolation, flipped to RGB, scaled by 1/255 and run alone through the FAN;
3. the last hourglass' heatmaps without the boundary channel (98, 64, 64) give the points: the arg-max cell
   (x, y), a quarter cell towards the larger neighbour along x and along y, plus half a cell; the points are then
   multiplied by (W/64, H/64) of the original image;
4. LMD of a pair = mean over the 98 points of the Euclidean distance (pixels of the original images); the printed
   number is the mean over the pairs (no normalisation by face size).

The neighbours of step 3 are read exactly as the script reads them, which is not a clean 2D neighbourhood:
- the x neighbours are the previous / next element of the row-major flattened map, so a peak on the left or right
  border reads a pixel of the neighbouring row, and a peak at cell 0 reads the last cell (numpy's index -1);
- the y neighbours switch for *all* 98 points of the image at once: if any point's peak lies in the last row, every
  "below" value is the map's last cell; if any peak index is at most 64 (first row, or cell (0, 1)), every "above"
  value is the map's first cell. Each image is decoded on its own, as the script calls `get_landmarks` per image,
  so a batched forward here does not couple the images.

The network is facexlib's `FAN` (facexlib/alignment/awing_arch.py), the same architecture as VQFR's (VQFR's
version differs only in hard-coding `.cuda()`). facexlib's own `get_landmarks` / `calculate_points` follow the same
steps line for line, but they are not used: `calculate_points` calls `np.float`, which numpy >= 1.24 removed, and
both are written for one image per call.

Our choices: the weights come from the registry (`awing_fan`, config key `weights.awing_fan`), read weights-only;
`device=None` runs on the CPU (the published numbers were computed on CUDA, which can differ in the last float bits).
A peak on the very last cell (63, 63) makes the script fail with an IndexError (it reads one element past the
map); here that neighbour wraps to the first cell, mirroring numpy's -1 on the other side. Lists of different
lengths raise an error (the script's `zip` would silently drop the extra files). `pair_values` pairs the sorted
lists as the script does but returns each value at its restored file's input position; batched forwards run up
to 8 images at once (on the CPU they differ from one-image forwards by about 5e-7 in the heatmaps, which moves a
point only on a near tie). An unreadable image raises an error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from honestface.checkpoints import check_state_dict, load_state_dict
from honestface.weights import WeightsError, resolve_weight

__all__ = ["LMD_INFO", "VQFRLandmarkDistance", "read_vqfr_input", "vqfr_heatmap_points"]

INPUT_SIZE = 256  # FAN input side
HEATMAP_SIZE = 64  # side of the hourglass heatmaps
NUM_POINTS = 98  # WFLW

LMD_INFO = {
    "description": "mean Euclidean distance (pixels of the original image) between the 98 AWing FAN (WFLW) "
    "landmarks of the restored image and of its ground truth, averaged over image pairs; whole aligned images "
    "resized to 256x256, no face detection",
    "weights": ("awing_fan",),
    "higher_is_better": False,
    "unit": "pixels",
    "source": "TencentARC/VQFR:metric_paper/calculate_landmark_distance.py",
}


def read_vqfr_input(path: str | os.PathLike) -> tuple[np.ndarray, tuple[int, int]]:
    """One image file -> the FAN input (3, 256, 256) float32 RGB in [0, 1] and the original (H, W).

    cv2.imread (BGR uint8) -> cv2.resize to 256x256 (default bilinear, on uint8) -> RGB -> /255.
    """
    bgr = cv2.imread(str(path))  # (H, W, 3) uint8 BGR; grey or RGBA files are converted by IMREAD_COLOR
    if bgr is None:
        raise ValueError(f"cannot read image {path} with cv2.imread")
    h, w = bgr.shape[:2]
    small = cv2.resize(bgr, (INPUT_SIZE, INPUT_SIZE))  # (256, 256, 3) uint8 BGR
    rgb = small[:, :, ::-1].transpose(2, 0, 1)  # (3, 256, 256) RGB
    x = np.ascontiguousarray(rgb).astype(np.float32) / np.float32(255.0)
    return x, (h, w)


def vqfr_heatmap_points(heatmaps: np.ndarray) -> np.ndarray:
    """Heatmaps of ONE image (P, 64, 64) -> (P, 2) float64 (x, y) in heatmap cells, the script's decoding.

    See the module docstring for the neighbour rules (flattened x neighbours, image-wide y switches).
    """
    if heatmaps.ndim != 3 or heatmaps.shape[1:] != (HEATMAP_SIZE, HEATMAP_SIZE):
        raise ValueError(f"expected heatmaps of one image (P, 64, 64), got shape {heatmaps.shape}")
    p = heatmaps.shape[0]
    cells = HEATMAP_SIZE * HEATMAP_SIZE
    flat = heatmaps.reshape(p, cells)  # (P, 4096) row-major
    peak = flat.argmax(axis=1)  # (P,) first maximum in row-major order
    rows = np.arange(p)
    points = np.stack([peak % HEATMAP_SIZE, peak // HEATMAP_SIZE], axis=1).astype(np.float64)  # (P, 2) (x, y)

    after = flat[rows, (peak + 1) % cells]  # next flat cell; past the end wraps to cell 0 (our choice, see above)
    before = flat[rows, peak - 1]  # previous flat cell; cell 0 reads the last cell, as numpy's -1 does
    if np.any(peak + HEATMAP_SIZE >= cells):
        below = flat[:, cells - 1]  # (P,) every point reads the last cell
    else:
        below = flat[rows, peak + HEATMAP_SIZE]
    if np.any(peak - HEATMAP_SIZE <= 0):
        above = flat[:, 0]  # (P,) every point reads the first cell
    else:
        above = flat[rows, peak - HEATMAP_SIZE]

    step = np.sign(np.stack([after - before, below - above], axis=1)) * 0.25  # (P, 2), dtype of the heatmaps
    points += step
    points += 0.5
    return points


def _as_path_list(paths, what: str) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError(f"{what} must be a list of image paths, not one path")
    return [str(p) for p in paths]


class VQFRLandmarkDistance:
    """VQFR's published LMD (module docstring). Lower is better; unit: pixels of the original images.

    Args:
        device: torch device of the FAN (None = CPU).
        weights: {registry name: path}; only "awing_fan" is read. Missing -> WeightsError naming `weights.awing_fan`.

    `landmarks(path)` -> (98, 2) float64 (x, y); `pair_values(restored, gt)` -> (N,) per-pair LMD;
    `aggregate(values, num_gt)` -> {"value": mean over pairs}.
    """

    name = "lmd"
    batch_size = 8

    def __init__(self, device=None, weights: dict | None = None) -> None:
        import torch
        from facexlib.alignment.awing_arch import FAN

        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.weights = dict(weights or {})
        path = resolve_weight("awing_fan", self.weights.get("awing_fan"))
        net = FAN(num_modules=4, end_relu=False, gray_scale=False, num_landmarks=NUM_POINTS, device=str(self.device))
        state = load_state_dict(path)  # {'state_dict': ...} unwrapped, weights-only
        try:
            check_state_dict(net, state, str(path), "the AWing FAN (4 hourglasses, 98 points)")
        except ValueError as err:
            raise WeightsError(f"{err} (config key weights.awing_fan)") from err
        net.load_state_dict(state, strict=True)
        self.net = net.to(self.device).eval()

    def _heatmaps(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, 256, 256) float32 -> last hourglass' landmark heatmaps (B, 98, 64, 64) float32 on the CPU."""
        import torch

        x = torch.from_numpy(batch).to(self.device)
        with torch.no_grad():
            outputs, _ = self.net(x)
        return outputs[-1][:, :-1].detach().float().cpu().numpy()  # boundary channel (the last one) dropped

    @staticmethod
    def _to_image(cells: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        h, w = size
        cells *= (w / HEATMAP_SIZE, h / HEATMAP_SIZE)  # heatmap cells -> original pixels, (98, 2)
        return cells

    def landmarks(self, path: Path | str) -> np.ndarray:
        """(98, 2) float64 (x, y) in the pixels of the image at `path`: the script's `get_landmarks(cv2.imread)`."""
        x, size = read_vqfr_input(path)
        heat = self._heatmaps(x[None])  # (1, 98, 64, 64)
        return self._to_image(vqfr_heatmap_points(heat[0]), size)

    def landmarks_batch(self, paths: list) -> list[np.ndarray]:
        """`landmarks` of many files: batched forwards (every input is 256x256), each image decoded on its own."""
        paths = _as_path_list(paths, "paths")
        out: list[np.ndarray] = []
        for start in range(0, len(paths), self.batch_size):
            inputs = [read_vqfr_input(p) for p in paths[start : start + self.batch_size]]
            heat = self._heatmaps(np.stack([x for x, _ in inputs]))  # (B, 98, 64, 64)
            out.extend(self._to_image(vqfr_heatmap_points(h), size) for h, (_, size) in zip(heat, inputs))
        return out

    def pair_values(self, restored: list, gt: list) -> np.ndarray:
        """(N,) float64 per-pair LMD in pixels. Pairing is the script's: each list sorted (by path string, as it
        sorts its folder listings) and zipped; values[i] belongs to restored[i] (the input order is kept)."""
        rest, ref = _as_path_list(restored, "restored"), _as_path_list(gt, "gt")
        if len(rest) != len(ref):
            raise ValueError(f"{len(rest)} restored images but {len(ref)} ground-truth images; LMD pairs files by "
                             "sorted name, so both lists must have the same length")
        order = sorted(range(len(rest)), key=lambda i: rest[i])  # positions of the restored files, sorted
        n = len(rest)
        points = self.landmarks_batch([rest[i] for i in order] + sorted(ref))
        values = np.zeros(n, dtype=np.float64)
        for k, i in enumerate(order):
            pred, target = points[k], points[n + k]  # (98, 2) each
            values[i] = np.sqrt(((target - pred) ** 2).sum(1)).mean()
        return values

    def aggregate(self, values: np.ndarray, num_gt: int) -> dict:
        """{"value": the script's printed average}: sum of the per-pair values / number of pairs (the divisor is
        the number of pairs, not `num_gt`; `num_gt` only bounds it)."""
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(vals) == 0:
            raise ValueError("LMD of an empty set of pairs is undefined")
        if len(vals) > num_gt:
            raise ValueError(f"{len(vals)} LMD values for only {num_gt} ground-truth images")
        return {"value": sum(vals.tolist()) / len(vals)}
