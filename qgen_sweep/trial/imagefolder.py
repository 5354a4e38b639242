"""ImageFolder trees on disk (torch-free, so the driver checks them before any trial starts).

The layout torchvision's ImageFolder reads and ImageNet-1K is distributed in once sorted:
`<split>/<class>/<image>`, e.g. `train/n01440764/n01440764_10026.JPEG`, with the validation
images sorted into the same class folders (`val/<wnid>/*.JPEG`). Class k is the k-th class folder
of the training split in sorted order (the convention torchvision's pretrained weights were
trained with); a validation split may hold a subset of the classes, never a class the training
split lacks. `scan` is the one reader of such trees: the imagenet dataset (trial/stream.py) and
any other folder source (ImageNet-C's `<corruption>/<severity>/<class>/` folders) use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from qgen_sweep.errors import DataError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")  # matched case-insensitively
IMAGENET_FOLDER = "imagenet"  # <data dir>/imagenet/{train,val}/<wnid>/*.JPEG
SPLITS = ("train", "val")
LAYOUT = "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ImageFolder, validation images sorted " \
         "into class folders)"


@dataclass(frozen=True)
class FolderIndex:
    """Every image of one split: absolute paths and class indices, in a fixed order (classes
    sorted, files sorted within a class), so an index into it names the same image anywhere."""

    root: Path
    classes: tuple[str, ...]  # class folder names; class k = classes[k]
    paths: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)


def _class_folders(root: Path) -> list[str]:
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _images(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries
                      if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))


def scan(root: Path, classes: tuple[str, ...] | None = None) -> FolderIndex:
    """Index the ImageFolder tree at `root`. With `classes` (the training split's), labels follow
    that list and a class folder outside it is an error; without, the tree's own sorted folders
    are the classes. Empty class folders keep their index (a label nobody has)."""
    root = Path(root)
    found = _class_folders(root)
    if classes is None:
        classes = tuple(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root} has class folder(s) the training split lacks: "
                        f"{', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}; every "
                        f"validation class must be a training class")
    index = {name: k for k, name in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for name in found:
        files = _images(root / name)
        paths += [str(root / name / f) for f in files]
        labels += [index[name]] * len(files)
    return FolderIndex(root, tuple(classes), tuple(paths), tuple(labels))


def imagenet_dir(data_root: Path) -> Path:
    """Where the imagenet dataset lives under a data root."""
    return Path(data_root) / IMAGENET_FOLDER


def missing_imagenet(folder: Path) -> str | None:
    """What is missing from an ImageNet folder (None when both splits hold class folders with
    images); cheap: looks at the first class folder of each split only."""
    for split in SPLITS:
        path = folder / split
        if not path.is_dir():
            return f"{path} does not exist"
        classes = _class_folders(path)
        if not classes:
            return f"{path} holds no class folders"
        if not _images(path / classes[0]):
            return f"{path / classes[0]} holds no .JPEG / .jpg / .png images"
    return None


def check_imagenet(data_root: Path) -> Path:
    """The imagenet folder under `data_root`; a DataError (one line: what is missing, the
    expected layout, the way out) when it is not there."""
    folder = imagenet_dir(data_root)
    problem = missing_imagenet(folder)
    if problem:
        raise DataError(f"imagenet data not found: {problem}; expected {folder}/{LAYOUT}; "
                        f"point --data-dir (or QGEN_DATA_DIR) at the folder that holds "
                        f"{IMAGENET_FOLDER}/")
    return folder
