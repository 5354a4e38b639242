"""Corrupted test sets behind one interface: `source.load(corruption, severity) -> (x, y)`, x
(N, C, H, W) float32 in [0, 1] on the device (8-bit levels / 255), y (N,) int64.

- ReleasedArrays: the released CIFAR-10-C / CIFAR-100-C .npy files (memory-mapped, one severity
  read at a time).
- ImageNetFolders: ImageNet-C's folder layout; images decoded with Pillow and resized to the
  model's input size.
- Generated: the trial's clean test split corrupted on the device (qgen_sweep.robustness.ops),
  seeded per (seed, corruption, severity, chunk), so every trial of a sweep sees the same images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from qgen_sweep.errors import DataError
from qgen_sweep.robustness import layout as layouts
from qgen_sweep.trial.data import Dataset

# Pixel levels of each dataset's stored images (CIFAR: uint8; digits: 0..16), to undo the float
# rounding of normalising and un-normalising the clean test split.
LEVELS = {"cifar10": 255, "cifar100": 255, "digits": 16}
GENERATION_CHUNK = 1000  # images corrupted per call: bounds device memory, fixes the draws


class CorruptedSource(Protocol):
    """What the robustness job evaluates on."""

    source: str  # "released" | "generated"
    layout: str  # "cifar-c" | "imagenet-c" | "generated"
    path: str | None  # folder read from (None when generated)
    seed: int | None

    def load(self, corruption: str, severity: int) -> tuple[Tensor, Tensor]: ...


def clean_images(data: Dataset) -> Tensor:
    """The test split back in [0, 1] at its stored pixel levels (N, C, H, W)."""
    mean = torch.tensor(data.mean, device=data.test_x.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=data.test_x.device).view(1, -1, 1, 1)
    levels = LEVELS.get(data.name, 255)
    return (torch.round((data.test_x * std + mean) * levels) / levels).clamp(0, 1)


def normalise(x: Tensor, data: Dataset) -> Tensor:
    """[0, 1] images -> the model's input (per-channel training-split mean and std)."""
    mean = torch.tensor(data.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def _seed(seed: int, corruption: str, severity: int, chunk: int) -> int:
    text = f"{seed}:{corruption}:{severity}:{chunk}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") % (2**63)


@dataclass
class Generated:
    """Corruptions of the clean test split, generated on its device."""

    clean: Tensor
    labels: Tensor
    seed: int = 0
    source: str = "generated"
    layout: str = "generated"
    path: str | None = None

    def load(self, corruption: str, severity: int) -> tuple[Tensor, Tensor]:
        from qgen_sweep.robustness.ops import corrupt

        parts = []
        for chunk, start in enumerate(range(0, len(self.clean), GENERATION_CHUNK)):
            generator = torch.Generator(device=self.clean.device)
            generator.manual_seed(_seed(self.seed, corruption, severity, chunk))
            images = self.clean[start:start + GENERATION_CHUNK]
            parts.append(corrupt(images, corruption, severity, generator))
        return torch.cat(parts), self.labels


@dataclass
class ReleasedArrays:
    """CIFAR-C arrays: <folder>/<corruption>.npy and labels.npy, severities stacked."""

    folder: Path
    dataset: str
    channels: int
    size: int
    device: torch.device
    source: str = "released"
    layout: str = "cifar-c"
    seed: int | None = None

    @property
    def path(self) -> str:
        return str(self.folder)

    def _array(self, name: str) -> np.ndarray:
        path = self.folder / f"{name}.npy"
        if not path.is_file():
            raise layouts.missing_file_error(self.dataset, self.folder, path)
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is not a .npy array ({error}); download it again") from error

    def load(self, corruption: str, severity: int) -> tuple[Tensor, Tensor]:
        images, labels = self._array(corruption), self._array("labels")
        expected = (self.size, self.size, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected or len(images) % 5 or \
                len(labels) != len(images):
            raise DataError(f"{self.folder / corruption}.npy must hold 5 x N images of shape "
                            f"{expected} with N labels per severity in labels.npy, but has "
                            f"{images.shape} and {len(labels)} labels")
        n = len(images) // 5
        part = slice((severity - 1) * n, severity * n)
        x = torch.from_numpy(np.array(images[part])).to(self.device)  # a copy: the map is read-only
        x = x.permute(0, 3, 1, 2).float() / 255  # (N, H, W, C) uint8 -> (N, C, H, W)
        y = torch.from_numpy(np.asarray(labels[part], dtype=np.int64)).to(self.device)
        return x.contiguous(), y


@dataclass
class ImageNetFolders:
    """ImageNet-C folders: <folder>/<corruption>/<severity>/<class>/<image>."""

    folder: Path
    channels: int
    size: int
    num_classes: int
    device: torch.device
    source: str = "released"
    layout: str = "imagenet-c"
    seed: int | None = None

    @property
    def path(self) -> str:
        return str(self.folder)

    def load(self, corruption: str, severity: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        root = self.folder / corruption / str(severity)
        classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        if not classes or len(classes) > self.num_classes:
            raise DataError(f"{root} must hold between 1 and {self.num_classes} class folders "
                            f"(the model's classes), but holds {len(classes)}")
        mode = "L" if self.channels == 1 else "RGB"
        images, labels = [], []
        for label, name in enumerate(classes):
            for path in sorted((root / name).iterdir()):
                if path.suffix.lower() not in layouts.IMAGE_SUFFIXES:
                    continue
                with Image.open(path) as picture:
                    picture = picture.convert(mode)
                    if picture.size != (self.size, self.size):
                        picture = picture.resize((self.size, self.size), Image.BILINEAR)
                    images.append(np.asarray(picture, dtype=np.uint8).reshape(
                        self.size, self.size, self.channels))
                labels.append(label)
        if not images:
            raise DataError(f"{root} holds no .JPEG / .jpg / .png images")
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float() / 255
        return x.contiguous(), torch.tensor(labels, dtype=torch.int64, device=self.device)


def open_source(source: str, data: Dataset, seed: int, data_root: Path,
                corrupted_dir: str | None) -> CorruptedSource:
    """The source the settings ask for, for the trial's dataset (on its device)."""
    if source == "generated":
        return Generated(clean_images(data), data.test_y, seed)
    folder = layouts.release_folder(data.name, data_root, corrupted_dir)
    device = data.test_x.device
    if layouts.layout(folder) == "imagenet-c":
        return ImageNetFolders(folder, data.in_channels, data.image_size, data.num_classes,
                               device)
    return ReleasedArrays(folder, data.name, data.in_channels, data.image_size, device)
