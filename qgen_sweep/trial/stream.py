"""The imagenet dataset: a streaming batch source over an ImageFolder tree (trial/imagefolder.py).

ImageNet-1K (1.28 M training images, ~140 GB of JPEG) cannot sit on the device like CIFAR, so a
batch is decoded when it is needed:
- The batch order is the resident engine's: a seeded permutation of the training split that is a
  pure function of (seed, epoch), cut into floor(n / batch) batches of one shape (the ragged last
  batch dropped). Each batch also draws its augmentation numbers from the same generator, for the
  whole global batch, so a data-parallel rank that takes its slice of the batch sees exactly the
  crops a single process would (and a resumed epoch the same as an uninterrupted one).
- Decode: torchvision.io (libjpeg-turbo straight to uint8 tensors, no PIL) and one
  `resized_crop` per image on uint8 (torch's vectorised uint8 bilinear, antialiased) in
  DataLoader worker processes (`runtime.data_workers`); on a CUDA device with
  `runtime.decode = "device"`, the workers only read the files and the batch is decoded with
  nvJPEG (`decode_jpeg(list, device="cuda")`) and cropped on the GPU.
  benchmarks/bench_imagenet.py measures both against PIL + torchvision transforms + DataLoader.
- Augmentation `crop-flip` on imagenet is the standard ImageNet one: RandomResizedCrop (scale
  0.08..1, aspect 3/4..4/3, torchvision's 10 attempts then a centred fallback) + horizontal flip.
  Evaluation (and `augment = "none"`) is torchvision's Resize(256) + CenterCrop(224) (for a model
  size S: the shorter side to round(S / 0.875), the central S x S).
- Normalisation with the ImageNet statistics torchvision's pretrained weights expect (computing
  them over 1.28 M images for every trial would cost an epoch of decoding).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from qgen_sweep.trial.imagefolder import FolderIndex, check_imagenet, scan

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights were trained with these
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop defaults (Szegedy et al. 2015, torchvision)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
EVAL_CROP = 0.875  # 224 / 256: Resize(256) + CenterCrop(224)
# Uniform numbers per image: (scale, log-ratio) per attempt, top, left, flip.
PARAMS = 2 * CROP_ATTEMPTS + 3
DECODE_MODES = ("host", "device")


# ----------------------------------------------------------------------------- crop geometry


def random_box(height: int, width: int, u: list[float]) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's RandomResizedCrop for an image of height x width, from
    PARAMS uniforms `u` in [0, 1) instead of its own RNG calls (same distribution)."""
    area = height * width
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for attempt in range(CROP_ATTEMPTS):
        target = area * (CROP_SCALE[0] + u[2 * attempt] * (CROP_SCALE[1] - CROP_SCALE[0]))
        aspect = math.exp(log_lo + u[2 * attempt + 1] * (log_hi - log_lo))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u[-3] * (height - h + 1)), height - h)
            left = min(int(u[-2] * (width - w + 1)), width - w)
            return top, left, h, w
    ratio = width / height  # fallback: the central crop at the nearest allowed aspect ratio
    if ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif ratio > CROP_RATIO[1]:
        h, w = height, round(height * CROP_RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def transform(image: Tensor, size: int, u: list[float] | None) -> Tensor:
    """One decoded (3, H, W) uint8 image -> (3, size, size) uint8: the random crop and flip of
    uniforms `u`, or the evaluation crop when `u` is None."""
    from torchvision.transforms.v2 import functional as tvf

    if u is None:  # torchvision's evaluation transform, exactly (Resize(256) + CenterCrop(224))
        resized = tvf.resize(image, [round(size / EVAL_CROP)], antialias=True)
        return tvf.center_crop(resized, [size, size])
    height, width = image.shape[-2:]
    out = tvf.resized_crop(image, *random_box(height, width, u), [size, size], antialias=True)
    return out.flip(-1) if u[-1] < 0.5 else out


# ----------------------------------------------------------------------------- decoding


def read_bytes(path: str) -> Tensor:
    """The file's bytes as a 1-D uint8 tensor (what torchvision's decoders take)."""
    from torchvision.io import read_file

    return read_file(path)


def decode(data: Tensor) -> Tensor:
    """JPEG / PNG bytes -> (3, H, W) uint8 RGB (grey and CMYK JPEGs converted, as ImageNet has)."""
    from torchvision.io import ImageReadMode, decode_image

    return decode_image(data, mode=ImageReadMode.RGB)


def decode_on(device: torch.device, blobs: list[Tensor]) -> list[Tensor]:
    """Decode a batch of JPEG byte tensors with nvJPEG on `device` (one batched call); files it
    cannot decode (a PNG named .JPEG) are decoded on the host and moved."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(blobs, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        return [decode(b).to(device) for b in blobs]


@dataclass(frozen=True)
class _Job:
    """One batch to load: its files, labels and per-image uniforms (None = evaluation crop)."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    params: Tensor | None  # (B, PARAMS) float64 uniforms


class _Jobs(torch.utils.data.Dataset):
    """The batches of one pass, for a DataLoader with batch_size=None: item i is batch i, loaded
    in a worker process (decoded, or only read when the device decodes)."""

    def __init__(self, jobs: list[_Job], size: int, decode_here: bool) -> None:
        self.jobs, self.size, self.decode_here = jobs, size, decode_here

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int):  # noqa: ANN204 - a batch tensor or the raw bytes
        job = self.jobs[i]
        labels = torch.tensor(job.labels, dtype=torch.int64)
        blobs = [read_bytes(p) for p in job.paths]
        if not self.decode_here:
            return blobs, labels, job.params
        return assemble([decode(b) for b in blobs], job.params, self.size), labels


def assemble(images: list[Tensor], params: Tensor | None, size: int) -> Tensor:
    """Decoded images (on any device) -> one (B, 3, size, size) uint8 batch."""
    rows = params.tolist() if params is not None else [None] * len(images)
    return torch.stack([transform(img, size, u) for img, u in zip(images, rows, strict=True)])


# ----------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class Shard:
    """This process's part of every batch in data-parallel training: rank r of `world` takes
    the r-th contiguous slice (the global batch must divide by world)."""

    rank: int = 0
    world: int = 1

    def slice(self, batch: int) -> slice:
        part = batch // self.world
        return slice(self.rank * part, (self.rank + 1) * part)


class ImageFolderSource:
    """Batches of an ImageFolder dataset, decoded as they are needed, normalised on `device`."""

    name = "imagenet"

    def __init__(self, folder: Path, size: int, device: torch.device, workers: int = 0,
                 decode_mode: str = "host", dtype: torch.dtype = torch.float32) -> None:
        self.train = scan(Path(folder) / "train")
        self.val = scan(Path(folder) / "val", classes=self.train.classes)
        self.size, self.device, self.workers, self.dtype = size, device, workers, dtype
        self.decode_on_device = decode_mode == "device" and device.type == "cuda"
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=dtype).view(shape)
        self.std = torch.tensor(IMAGENET_STD, device=device, dtype=dtype).view(shape)

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    in_channels = 3

    @property
    def image_size(self) -> int:
        return self.size

    @property
    def info(self):  # noqa: ANN201 - DatasetInfo (data.py imports nothing from here)
        from qgen_sweep.trial.data import DatasetInfo

        return DatasetInfo(self.name, self.num_classes, 3, self.size, IMAGENET_MEAN,
                           IMAGENET_STD)

    def split(self, name: str) -> FolderIndex:
        return self.train if name == "train" else self.val

    def train_batches(self, generator: torch.Generator, batch_size: int, augment: bool,
                      shard: Shard = Shard()) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch: floor(n / batch) (x, y) batches of this shard, x (B / world, 3, S, S)
        normalised on the device. `generator` (CPU, the epoch's) draws the permutation and then
        each global batch's uniforms, in batch order."""
        from qgen_sweep.trial.data import batch_indices

        order = batch_indices(len(self.train), batch_size, generator)  # (steps, batch)
        part = shard.slice(order.shape[1])
        jobs = []
        for row in order:
            params = torch.rand(len(row), PARAMS, generator=generator, dtype=torch.float64)
            ids = row[part].tolist()
            jobs.append(_Job(tuple(self.train.paths[i] for i in ids),
                             tuple(self.train.labels[i] for i in ids),
                             params[part] if augment else None))
        return self._load(jobs)

    def eval_batches(self, split: str, batch_size: int,
                     shard: Shard = Shard()) -> Iterator[tuple[Tensor, Tensor]]:
        """Every image of `split` ("train" or "val") once, evaluation crop; with a shard, rank r
        of w takes images r, r + w, ... (the sums over shards cover the split exactly once)."""
        index = self.split(split)
        mine = list(range(shard.rank, len(index), shard.world))
        jobs = [_Job(tuple(index.paths[i] for i in mine[s:s + batch_size]),
                     tuple(index.labels[i] for i in mine[s:s + batch_size]), None)
                for s in range(0, len(mine), batch_size)]
        return self._load(jobs)

    def _load(self, jobs: list[_Job]) -> Iterator[tuple[Tensor, Tensor]]:
        loader = torch.utils.data.DataLoader(
            _Jobs(jobs, self.size, not self.decode_on_device), batch_size=None,
            num_workers=self.workers, pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None, persistent_workers=False)
        for item in loader:
            if self.decode_on_device:
                blobs, labels, params = item
                images = decode_on(self.device, blobs)
                x = assemble(images, params, self.size)
            else:
                x, labels = item
            yield self.normalise(x), labels.to(self.device, non_blocking=True)

    def normalise(self, x: Tensor) -> Tensor:
        """(B, 3, S, S) uint8 -> the model's input: [0, 1], then ImageNet mean and std."""
        x = x.to(self.device, non_blocking=True).to(self.dtype) / 255
        return ((x - self.mean) / self.std).contiguous()


def open_imagenet(data_root: Path, size: int, device: torch.device, workers: int = 0,
                  decode_mode: str = "host",
                  dtype: torch.dtype = torch.float32) -> ImageFolderSource:
    """The imagenet source under `data_root` (a one-line DataError naming the layout when the
    folders are not there)."""
    return ImageFolderSource(check_imagenet(data_root), size, device, workers, decode_mode, dtype)
