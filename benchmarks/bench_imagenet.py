"""Decoding and augmenting ImageNet batches: the imagenet streaming source (qgen_sweep/trial/
stream.py) against the plain pipeline (torchvision's ImageFolder with Pillow, the classic
transforms RandomResizedCrop + flip + ToTensor + Normalize per sample, a DataLoader).

Side by side on the same tree of ImageNet-sized JPEG files (photographs of about 500 x 375, the
ImageNet average, cut from scikit-learn's sample images), the same number of loader worker
processes, batch 64, 224 px: training batches (random crop + flip) and evaluation batches
(Resize(256) + CenterCrop(224)). Runs alternate (ours, baseline, ours, ...) and the best of each is
kept (the machine is shared). `value` and `baseline` are images per second; `ratio` = ours /
baseline (higher is better). With a CUDA device, the nvJPEG path (decode = "device") is measured
as well; without one, only the host path.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qgen_sweep.trial.data import epoch_generator
from qgen_sweep.trial.stream import IMAGENET_MEAN, IMAGENET_STD, open_imagenet

SIZE, BATCH = 224, 64


def _write_tree(root: Path, images: int) -> None:
    """images JPEGs of 500 x 375 .. 375 x 500 in 4 classes, cut from two photographs."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # 427 x 640
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(images):
            photo = photos[i % 2]
            h, w = (375, 500) if i % 3 else (500, 375)
            h, w = min(h, photo.shape[0]), min(w, photo.shape[1])
            top = int(rng.integers(0, photo.shape[0] - h + 1))
            left = int(rng.integers(0, photo.shape[1] - w + 1))
            folder = root / "imagenet" / split / f"n{i % 4:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo[top:top + h, left:left + w]).save(
                folder / f"img_{i}.JPEG", quality=90)


def _baseline_loader(root: Path, train: bool, workers: int):
    from torchvision import datasets, transforms

    steps = [transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip()] if train \
        else [transforms.Resize(256), transforms.CenterCrop(SIZE)]
    pipeline = transforms.Compose([*steps, transforms.ToTensor(),
                                   transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    folder = datasets.ImageFolder(str(root / "imagenet" / ("train" if train else "val")),
                                  pipeline)
    return torch.utils.data.DataLoader(folder, batch_size=BATCH, shuffle=train, drop_last=train,
                                       num_workers=workers)


def _rate(batches) -> float:
    start, count = time.perf_counter(), 0
    for x, _ in batches:
        count += len(x)
    return count / (time.perf_counter() - start)


def _ours(root: Path, train: bool, workers: int, decode: str, device: torch.device):
    source = open_imagenet(root, SIZE, device, workers=workers, decode_mode=decode)
    if train:
        return source.train_batches(epoch_generator(0, 1, torch.device("cpu")), BATCH, True)
    return source.eval_batches("val", BATCH)


def _figure(name: str, ours: list[float], base: list[float], workers: int, note: str) -> dict:
    best, plain = max(ours), max(base)
    return {"name": name, "value": round(best, 1), "unit": "images/s",
            "baseline": round(plain, 1), "ratio": round(best / plain, 2),
            "notes": f"{note}; {workers} loader workers, batch {BATCH}, {SIZE} px; best of "
                     f"{len(ours)} interleaved runs; ours {[round(v) for v in ours]}, "
                     f"baseline {[round(v) for v in base]}"}


def run(quick: bool) -> list[dict]:
    """Figures: training and evaluation batches per second, ours vs the PIL baseline."""
    images, repeats, workers = (128, 2, 2) if quick else (512, 3, 2)
    modes = [("host", torch.device("cpu"))]
    if torch.cuda.is_available():
        modes.append(("device", torch.device("cuda")))
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_tree(root, images)
        for decode, device in modes:
            for train in (True, False):
                ours, base = [], []
                for _ in range(repeats):
                    ours.append(_rate(_ours(root, train, workers, decode, device)))
                    base.append(_rate(_baseline_loader(root, train, workers)))
                kind = "train (random crop + flip)" if train else "eval (resize + centre crop)"
                note = (f"{kind}; decode on the {'GPU (nvJPEG)' if decode == 'device' else 'host'}"
                        f" vs Pillow + torchvision transforms; {images} JPEGs of ~500 x 375")
                figures.append(_figure(f"imagenet_{'train' if train else 'eval'}_{decode}",
                                       ours, base, workers, note))
    return figures
