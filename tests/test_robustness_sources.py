"""Corrupted test sets behind one interface: tiny CIFAR-10-C-format arrays and ImageNet-C-layout
folders written here, and the generated source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qgen_sweep.errors import DataError
from qgen_sweep.robustness.layout import check_release, layout, release_folder
from qgen_sweep.robustness.sources import Generated, ImageNetFolders, ReleasedArrays

CPU = torch.device("cpu")


def write_cifar_c(folder: Path, names: tuple[str, ...], per_severity: int = 4,
                  shape: tuple[int, int, int] = (32, 32, 3), seed: int = 0) -> dict:
    """Tiny CIFAR-C files: <name>.npy (5 x N, H, W, C) uint8 and labels.npy (5 x N,) uint8, as
    released; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.tile(rng.integers(0, 10, per_severity), 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    arrays = {"labels": labels}
    for name in names:
        arrays[name] = rng.integers(0, 256, (5 * per_severity, *shape), dtype=np.uint8)
        np.save(folder / f"{name}.npy", arrays[name])
    return arrays


def test_released_arrays_are_read_one_severity_at_a_time(tmp_path: Path) -> None:
    arrays = write_cifar_c(tmp_path / "CIFAR-10-C", ("fog", "contrast"))
    source = ReleasedArrays(tmp_path / "CIFAR-10-C", "cifar10", 3, 32, CPU)
    for severity in (1, 3, 5):
        x, y = source.load("fog", severity)
        block = arrays["fog"][(severity - 1) * 4:severity * 4]
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        assert torch.equal(torch.round(x * 255).to(torch.uint8),
                           torch.from_numpy(block).permute(0, 3, 1, 2))
        assert y.tolist() == arrays["labels"][:4].tolist() and y.dtype == torch.int64
    assert layout(tmp_path / "CIFAR-10-C") == "cifar-c"
    assert check_release("cifar10", tmp_path / "CIFAR-10-C", ("fog",), (1,)) == "cifar-c"


def test_a_missing_file_is_one_line_naming_it_and_the_download_page(tmp_path: Path) -> None:
    folder = release_folder("cifar10", tmp_path, None)
    assert folder == tmp_path / "CIFAR-10-C"
    write_cifar_c(folder, ("fog",))
    with pytest.raises(DataError) as caught:
        check_release("cifar10", folder, ("fog", "snow"), (1,))
    message = str(caught.value)
    assert str(folder / "snow.npy") in message and "CIFAR-10-C on Zenodo" in message
    assert "--source generated" in message and len(message.splitlines()) == 1
    with pytest.raises(DataError, match=str(folder / "frost.npy")):
        ReleasedArrays(folder, "cifar10", 3, 32, CPU).load("frost", 1)
    with pytest.raises(DataError, match="CIFAR-100-C on Zenodo"):
        check_release("cifar100", release_folder("cifar100", tmp_path, None), ("fog",), (1,))
    with pytest.raises(DataError, match="digits has no released corrupted test set"):
        release_folder("digits", tmp_path, None)


def test_arrays_of_the_wrong_shape_are_refused(tmp_path: Path) -> None:
    write_cifar_c(tmp_path, ("fog",), shape=(28, 28, 3))
    with pytest.raises(DataError, match=r"must hold 5 x N images of shape \(32, 32, 3\)"):
        ReleasedArrays(tmp_path, "cifar10", 3, 32, CPU).load("fog", 1)


def test_imagenet_c_folders_map_sorted_class_folders_to_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    written = {}
    for k, wnid in enumerate(("n01440764", "n01443537", "n01484850")):
        folder = tmp_path / "fog" / "2" / wnid
        folder.mkdir(parents=True)
        written[k] = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(written[k]).save(folder / "ILSVRC2012_val_0000000{k}.png")
        (folder / "notes.txt").write_text("not an image")
    (tmp_path / "fog" / "1").mkdir()
    assert layout(tmp_path) == "imagenet-c"
    x, y = ImageNetFolders(tmp_path, 3, 16, 10, CPU).load("fog", 2)
    assert y.tolist() == [0, 1, 2] and x.shape == (3, 3, 16, 16)
    assert torch.equal(torch.round(x[1] * 255).to(torch.uint8),
                       torch.from_numpy(written[1]).permute(2, 0, 1))
    small, _ = ImageNetFolders(tmp_path, 1, 8, 10, CPU).load("fog", 2)  # resized, grey
    assert small.shape == (3, 1, 8, 8)
    with pytest.raises(DataError, match="between 1 and 2 class folders"):
        ImageNetFolders(tmp_path, 3, 16, 2, CPU).load("fog", 2)
    with pytest.raises(DataError, match=r"fog/3 not found"):
        check_release("cifar10", tmp_path, ("fog",), (2, 3))


def test_generated_sets_are_the_same_for_every_trial_and_seeded() -> None:
    clean = torch.rand(1500, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    clean = torch.round(clean * 255) / 255
    labels = torch.arange(1500) % 10
    a, ya = Generated(clean, labels, seed=3).load("gaussian_noise", 2)
    b, _ = Generated(clean.clone(), labels, seed=3).load("gaussian_noise", 2)
    c, _ = Generated(clean, labels, seed=4).load("gaussian_noise", 2)
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(ya, labels)
    assert a.shape == clean.shape  # two chunks (1,000 + 500 images) put back in order
    alone, _ = Generated(clean[1000:], labels[1000:], 3).load("gaussian_noise", 2)
    assert not torch.equal(a[1000:], alone)  # the same images as a first chunk: other draws
