"""Tiny ImageFolder trees of real JPEG files, written by the tests themselves (ImageNet cannot be
downloaded here): `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` under `<data dir>/imagenet`."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_jpeg(path: Path, pixels: np.ndarray, quality: int = 90) -> None:
    """Save (H, W, 3) or (H, W) uint8 pixels as a JPEG file."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)


def class_image(label: int, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A learnable picture of class `label`: a class-specific colour and stripe direction plus
    noise, so a small model can tell the classes apart."""
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40],
                        [200, 40, 200], [40, 200, 200]], dtype=np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    stripes = np.sin((xx if label % 2 else yy) * (0.3 + 0.1 * (label % 3)))
    base = colours[label % len(colours)][None, None, :] * (0.75 + 0.25 * stripes[..., None])
    noisy = base + rng.normal(0, 12, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def make_imagenet(data_root: Path, classes: int = 3, train_per_class: int = 8,
                  val_per_class: int = 2, seed: int = 0) -> Path:
    """Write `<data_root>/imagenet/{train,val}/n0000000k/*.JPEG` with images of assorted sizes
    (and one greyscale JPEG, as ImageNet has); returns the imagenet folder."""
    rng = np.random.default_rng(seed)
    folder = Path(data_root) / "imagenet"
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label in range(classes):
            wnid = f"n{label:08d}"
            for i in range(count):
                height, width = int(rng.integers(36, 60)), int(rng.integers(36, 60))
                pixels = class_image(label, rng, height, width)
                if split == "train" and label == 0 and i == 0:
                    pixels = pixels.mean(axis=2).astype(np.uint8)  # a greyscale JPEG
                write_jpeg(folder / split / wnid / f"{wnid}_{i}.JPEG", pixels)
    return folder
