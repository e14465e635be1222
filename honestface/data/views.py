"""Augmented views of one face crop: stand-in references when only one photo of a person exists.

The small-scale recipe (quickstart, tests) has a single photo per identity, while the reference-based model
needs other photos of the same person. We make them from the one crop with mild, pose-like jitter: a random
similarity transform (rotation, scale, shift), an optional horizontal flip, and brightness/contrast/colour
changes. They are honest stand-ins, not new photos: the quickstart report says so.
"""

from __future__ import annotations

import cv2
import numpy as np


def augmented_views(crop: np.ndarray, count: int, seed: int = 0, rotation: float = 8.0, scale: float = 0.06,
                    shift: float = 0.04, flip: bool = True, colour: float = 0.08,
                    return_matrices: bool = False) -> list[np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
    """`count` jittered copies of an aligned face crop (H, W, 3) uint8, deterministic in `seed`.

    rotation: max degrees; scale: max relative zoom; shift: max fraction of the size; flip: mirror half of the
    views; colour: max relative change of brightness, contrast and each channel's gain. Borders are reflected, so
    no black corners appear. `return_matrices`: (view, M) pairs, M (2, 3) mapping crop pixels to view pixels (with
    a flip, landmark indices also swap sides: reindex them with the scheme's `swap_sides`, as
    `honestface.data.sample_dataset.build_sample_identities` does).
    """
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"augmented_views expects an (H, W, 3) uint8 crop, got {crop.shape} {crop.dtype}")
    rng = np.random.default_rng(seed)
    h, w = crop.shape[:2]
    views = []
    for _ in range(count):
        angle = rng.uniform(-rotation, rotation)
        zoom = 1.0 + rng.uniform(-scale, scale)
        m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, zoom)
        m[:, 2] += rng.uniform(-shift, shift, size=2) * (w, h)
        view = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if flip and rng.random() < 0.5:
            view = view[:, ::-1]
            m = np.array([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0.0, 0.0, 1.0]])
        x = view.astype(np.float32) / 255.0
        gain = 1.0 + rng.uniform(-colour, colour, size=3)  # per channel
        contrast = 1.0 + rng.uniform(-colour, colour)
        brightness = rng.uniform(-colour, colour) / 2
        mean = x.mean()
        x = (x - mean) * contrast + mean + brightness
        view = np.ascontiguousarray(np.clip(x * gain, 0, 1) * 255 + 0.5).astype(np.uint8)
        views.append((view, m) if return_matrices else view)
    return views
