"""Where released corrupted test sets live and which layout they have (torch-free, so the driver
can check them before it starts any job).

- CIFAR-C arrays: `<folder>/<corruption>.npy` (5 x N images stacked by severity, uint8 N H W C)
  and `<folder>/labels.npy` (5 x N labels); the default folder is `<data dir>/CIFAR-10-C` or
  `<data dir>/CIFAR-100-C`.
- ImageNet-C folders: `<folder>/<corruption>/<severity>/<class>/*.JPEG`; class k is the k-th
  class folder in sorted order (the ImageFolder convention ImageNet models are trained with).
"""

from __future__ import annotations

from pathlib import Path

from qgen_sweep.errors import DataError

# dataset -> (folder name of the release, the page it is downloaded from)
RELEASES = {
    "cifar10": ("CIFAR-10-C", "CIFAR-10-C on Zenodo (record 2535967)"),
    "cifar100": ("CIFAR-100-C", "CIFAR-100-C on Zenodo (record 3555552)"),
}
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def release_folder(dataset: str, data_root: Path, corrupted_dir: str | None) -> Path:
    """--corrupted-dir, else the release's folder under the data directory."""
    if corrupted_dir:
        return Path(corrupted_dir).expanduser()
    if dataset not in RELEASES:
        raise DataError(f"{dataset} has no released corrupted test set; use --source generated, "
                        f"or --corrupted-dir DIR holding CIFAR-C arrays or ImageNet-C folders")
    return data_root / RELEASES[dataset][0]


def layout(folder: Path) -> str:
    """"imagenet-c" when the folder holds corruption/severity sub-folders, else "cifar-c"."""
    if not folder.is_dir() or any(folder.glob("*.npy")):
        return "cifar-c"
    nested = any(p.is_dir() and (p / "1").is_dir() for p in folder.iterdir())
    return "imagenet-c" if nested else "cifar-c"


def _download_hint(dataset: str, folder: Path) -> str:
    name, page = RELEASES.get(dataset, ("the corrupted test set", "its release page"))
    return (f"download {name}.tar from {page} and unpack it so that {folder} holds the .npy "
            f"files (or pass --corrupted-dir DIR, or use --source generated)")


def missing_file_error(dataset: str, folder: Path, path: Path) -> DataError:
    return DataError(f"corrupted test set file {path} not found: {_download_hint(dataset, folder)}")


def check_release(dataset: str, folder: Path, corruptions: tuple[str, ...],
                  severities: tuple[int, ...]) -> str:
    """The folder's layout, after checking that every requested set is there (one line naming
    the first missing file or folder otherwise)."""
    kind = layout(folder)
    if kind == "cifar-c":
        for name in ("labels", *corruptions):
            path = folder / f"{name}.npy"
            if not path.is_file():
                raise missing_file_error(dataset, folder, path)
        return kind
    for corruption in corruptions:
        for severity in severities:
            path = folder / corruption / str(severity)
            if not path.is_dir():
                raise DataError(f"corrupted test set folder {path} not found: an ImageNet-C "
                                f"layout needs <corruption>/<severity>/<class>/ image folders "
                                f"(or use --source generated)")
    return kind
