"""What a trial reads from the machine it runs on, checked without torch (so the driver refuses a
launch before any trial starts): the dataset files, the pretrained weight files, the device.

Each check raises the same one-line error the trial engine would raise (the engine's loaders use
these functions too), so a problem reads the same on the driver and in a trial.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from qgen_sweep.errors import DataError, UsageError
from qgen_sweep.trial.config import TrialConfig, TrialRuntime

# dataset -> (folder under the data root, training files, test files, label key in the pickles):
# torchvision's python-pickle layout
CIFAR_FILES = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def data_root(runtime: TrialRuntime) -> Path:
    """runtime.data_dir, else $QGEN_DATA_DIR, else $XDG_CACHE_HOME (~/.cache)/qgen-sweep/data."""
    if runtime.data_dir:
        return Path(runtime.data_dir).expanduser()
    if os.environ.get("QGEN_DATA_DIR"):
        return Path(os.environ["QGEN_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "qgen-sweep" / "data"


def missing_cifar(name: str, root: Path) -> list[str]:
    """The files of CIFAR dataset `name` that are not under `root` (empty when all are there)."""
    folder, train_files, test_files, _ = CIFAR_FILES[name]
    base = Path(root) / folder
    return [f for f in train_files + test_files if not (base / f).is_file()]


def cifar_missing_error(name: str, root: Path, missing: list[str]) -> DataError:
    """One line: which CIFAR files are missing, where, and the ways out."""
    folder = CIFAR_FILES[name][0]
    base = Path(root) / folder
    return DataError(
        f"{name} data not found: {base} lacks {', '.join(missing)}; run with --download "
        f"(needs internet) or copy torchvision's {folder}/ there, or point --data-dir / "
        f"QGEN_DATA_DIR at the folder that holds it"
    )


def check_data(datasets: Iterable[str], runtime: TrialRuntime) -> None:
    """Every dataset's files are under the data root (CIFAR that `runtime.download` fetches and
    the bundled digits excepted); the first missing one is a one-line DataError."""
    from qgen_sweep.trial.imagefolder import check_imagenet

    root = data_root(runtime)
    for name in sorted(set(datasets)):
        if name in CIFAR_FILES and not runtime.download:
            missing = missing_cifar(name, root)
            if missing:
                raise cifar_missing_error(name, root, missing)
        elif name == "imagenet":
            check_imagenet(root)


def visible_gpus() -> int | None:
    """NVIDIA GPUs this process may use, counted without CUDA: the driver's
    /proc/driver/nvidia/gpus entries, narrowed by CUDA_VISIBLE_DEVICES. None when the count is
    unknown (another vendor's GPUs, /dev/kfd for ROCm), so a check never refuses on a guess."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    gpus = Path("/proc/driver/nvidia/gpus")
    if not gpus.is_dir():
        return None if Path("/dev/nvidia0").exists() or Path("/dev/kfd").exists() else 0
    count = len(list(gpus.iterdir()))
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


def check_device(device: str) -> None:
    """A `cuda` / `cuda:N` device needs that GPU on this machine (a UsageError, the message the
    engine's resolve_device gives, otherwise); auto and cpu always run."""
    if not device.startswith("cuda"):
        return
    gpus = visible_gpus()
    if gpus == 0:
        raise UsageError(f"device {device!r} requested but CUDA is not available; use "
                         f"runtime.device = \"cpu\" (or \"auto\"), or run on a machine with a GPU")
    index = int(device.partition(":")[2] or 0)
    if gpus is not None and index >= gpus:
        raise UsageError(f"device {device!r} requested but this machine has {gpus} GPU(s) "
                         f"(cuda:0 to cuda:{gpus - 1}); pick one of those, or \"auto\"")


def check_inputs(configs: Iterable[TrialConfig], runtime: TrialRuntime,
                 device_here: bool = True) -> None:
    """Before anything trains (torch-free, on the driver): the dataset files, every pretrained
    weight file the trials read, and (`device_here`: the trials run on this machine) the device.
    The first problem is a one-line UsageError / DataError."""
    from qgen_sweep.trial.weights import check_weights, weight_file

    configs = list(configs)
    check_data((c.dataset for c in configs), runtime)
    for path_config in {weight_file(c): c for c in configs if c.pretrained}.values():
        check_weights(path_config, runtime.download)
    if device_here:
        check_device(runtime.device)
