"""Datasets as whole tensors on the training device, batches by seeded permutation.

- cifar10 / cifar100: torchvision's on-disk python-pickle format, read here directly
  (torchvision's dataset classes check md5 sums, which rejects the small files tests write);
  torchvision is used only to download (`runtime.download`).
- digits: scikit-learn's bundled UCI handwritten digits (1 x 8 x 8, values 0..16), a fixed
  stratified 80/20 split.

Images are normalised per channel with the training split's mean and std. Nothing here runs
per-sample Python: a batch is an index tensor into the resident dataset (performance.md).
"""

from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qgen_sweep.errors import DataError, UsageError
from qgen_sweep.trial.config import DATASET_SHAPES, TrialRuntime
from qgen_sweep.trial.inputs import CIFAR_FILES, cifar_missing_error, data_root, missing_cifar

SHAPES = DATASET_SHAPES  # name -> (in_channels, image_size, num_classes)

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the split is part of the dataset, not of the trial seed
CROP_PADDING = 4  # pixels, the standard CIFAR random-crop padding


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its data (stored in checkpoints)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Dataset:
    """Normalised fp32 images (N, C, H, W) and int64 labels (N,), all on one device."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def info(self) -> DatasetInfo:
        return DatasetInfo(
            self.name, self.num_classes, self.in_channels, self.image_size, self.mean, self.std
        )


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; an unavailable device is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"device must be auto, cpu or cuda[:N], but got {name!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def load_dataset(name: str, runtime: TrialRuntime = TrialRuntime()) -> Dataset:
    """Load dataset `name`, normalised with training-split statistics, onto runtime.device."""
    if name not in SHAPES:
        raise UsageError(f"dataset must be one of {', '.join(SHAPES)}, but got {name!r}")
    if name == "imagenet":  # too large to be resident: trial/stream.py streams its batches
        raise UsageError("imagenet is not held in memory: it is read batch by batch "
                         "(qgen_sweep.trial.stream.open_imagenet); this command does not "
                         "support it yet")
    if name == "digits":
        train_x, train_y, test_x, test_y = _digits_arrays()
    else:
        train_x, train_y, test_x, test_y = _cifar_arrays(name, data_root(runtime), runtime.download)
    device = resolve_device(runtime.device)
    in_channels, image_size, num_classes = SHAPES[name]
    train = torch.from_numpy(train_x).float()
    mean = train.mean(dim=(0, 2, 3))
    std = train.std(dim=(0, 2, 3)).clamp_min(1e-6)  # a constant channel would divide by zero

    def prepare(x: np.ndarray) -> Tensor:
        images = (torch.from_numpy(x).float() - mean[:, None, None]) / std[:, None, None]
        return images.to(device).contiguous()

    return Dataset(
        name=name,
        train_x=prepare(train_x),
        # torch.tensor copies: the cached digits arrays are never shared with a trial
        train_y=torch.tensor(train_y, dtype=torch.int64, device=device),
        test_x=prepare(test_x),
        test_y=torch.tensor(test_y, dtype=torch.int64, device=device),
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return train_x, train_y, test_x, test_y


def _cifar_arrays(
    name: str, root: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder, train_files, test_files, label_key = CIFAR_FILES[name]
    base = root / folder
    missing = missing_cifar(name, root)
    if missing and download:
        _download_cifar(name, root)
        missing = missing_cifar(name, root)
    if missing:
        raise cifar_missing_error(name, root, missing)
    train_x, train_y = _read_cifar_batches([base / f for f in train_files], label_key)
    test_x, test_y = _read_cifar_batches([base / f for f in test_files], label_key)
    return train_x, train_y, test_x, test_y


def _read_cifar_batches(paths: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate pickled CIFAR batches: b"data" uint8 (N, 3072) -> (N, 3, 32, 32) in [0, 1]."""
    images, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            targets = np.asarray(batch[label_key], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as error:
            raise DataError(
                f"{path} is not a CIFAR python batch ({error}); delete it and fetch the data "
                "again with --download"
            ) from error
        images.append(data)
        labels.append(targets)
    return (np.concatenate(images).astype(np.float32) / 255.0), np.concatenate(labels)


def _download_cifar(name: str, root: Path) -> None:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    try:
        cls(str(root), train=True, download=True)
    except Exception as error:  # network errors come in many types (URLError, OSError, ...)
        raise DataError(
            f"downloading {name} into {root} failed ({error}); copy the data there by hand"
        ) from error


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """Generator for epoch `epoch`'s shuffling and augmentation, a pure function of (seed, epoch),
    so a resumed trial draws the same batches without saved data-RNG state."""
    generator = torch.Generator(device=device)
    # Large odd multiplier keeps (seed, epoch) pairs from colliding for epochs < 1e6.
    generator.manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return generator


def batch_indices(n: int, batch_size: int, generator: torch.Generator) -> Tensor:
    """(steps, batch) index matrix of a seeded permutation of range(n).

    The ragged last batch is dropped so every step has the same shape (static shapes for
    torch.compile / CUDA graphs); an epoch is floor(n / batch) steps. A batch larger than the
    dataset shrinks to the dataset.
    """
    batch = min(batch_size, n)
    perm = torch.randperm(n, generator=generator, device=generator.device)
    steps = n // batch
    return perm[: steps * batch].view(steps, batch)


def crop_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop with zero padding CROP_PADDING + random horizontal flip, per sample, batched."""
    b, _, h, w = x.shape  # (B, C, H, W)
    pad = CROP_PADDING
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator, device=x.device)
    rows = dy + torch.arange(h, device=x.device)  # (B, H)
    cols = dx + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B,H,W,C)
    cropped = cropped.permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped).contiguous()
