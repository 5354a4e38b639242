"""Where a pretrained start's weight file is (torch-free, so the driver checks it before any
trial starts), and the one-line error when it is not there.

`pretrained = "torchvision"` reads the arch's published ImageNet-1K file (torchvision's; DeiT's
release for deit_t; archs.py names them) from torch.hub's cache,
`$TORCH_HOME/hub/checkpoints/` (default `$XDG_CACHE_HOME/torch` or `~/.cache/torch`), where
torchvision itself keeps it; a missing file is fetched only with `runtime.download = true`
(internet). Any other value is a path to a weight
file: a state_dict, a `{"model": state_dict}` checkpoint (DeiT's releases; our best.pt), the
layouts trial/pretrained.py converts.
"""

from __future__ import annotations

import os
from pathlib import Path

from qgen_sweep.errors import DataError
from qgen_sweep.trial.archs import ARCHS
from qgen_sweep.trial.config import TrialConfig


def published_file(arch: str) -> str:
    """File name of the arch's published weights (as torch.hub caches them)."""
    return ARCHS[arch].torchvision.rsplit("/", 1)[1]


def hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, computed as torch.hub.get_dir() does (without torch)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def weight_file(config: TrialConfig) -> Path | None:
    """The file a pretrained trial starts from (None when it starts from scratch)."""
    if not config.pretrained:
        return None
    if config.pretrained == "torchvision":
        return hub_checkpoints() / published_file(config.arch)
    return Path(config.pretrained).expanduser()


def missing_weights_error(config: TrialConfig, path: Path) -> DataError:
    """One line: which weights are missing, where to put them, the other ways out."""
    if config.pretrained == "torchvision":
        return DataError(
            f"{config.arch}'s published ImageNet weights not found: put {path.name} (from "
            f"{ARCHS[config.arch].torchvision}) in {path.parent}/, or set runtime.download = "
            f"true (needs internet), or give train.pretrained = \"PATH\" to a weight file")
    return DataError(f"pretrained weight file {path} not found (train.pretrained of "
                     f"{config.arch}); put the file there or give the path to it")


def check_weights(config: TrialConfig, download: bool = False) -> Path | None:
    """The weight file of `config`; DataError when it is missing and will not be downloaded."""
    path = weight_file(config)
    if path is None or path.is_file():
        return path
    if config.pretrained == "torchvision" and download:
        return path
    raise missing_weights_error(config, path)
