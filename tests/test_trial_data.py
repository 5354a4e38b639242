"""Datasets: CIFAR python-pickle files written here, digits, data directory, batches, crop+flip."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from qgen_sweep.errors import DataError, UsageError
from qgen_sweep.trial.config import TrialRuntime
from qgen_sweep.trial.data import (
    CROP_PADDING,
    batch_indices,
    crop_flip,
    data_root,
    epoch_generator,
    load_dataset,
)

CPU = TrialRuntime(device="cpu")


def _write_batch(path: Path, images: np.ndarray, labels: list[int], label_key: bytes) -> None:
    """One batch in torchvision's on-disk format: a pickle of bytes keys, data (N, 3072) uint8."""
    batch = {b"batch_label": b"test batch", label_key: labels,
             b"data": images.reshape(len(images), 3072), b"filenames": [b"x.png"] * len(images)}
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [label // 5 for label in labels]
    with open(path, "wb") as handle:
        pickle.dump(batch, handle)


def _fake_cifar(root: Path, name: str, per_file: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Write a tiny CIFAR-10 or CIFAR-100 tree; return the training images and labels written."""
    rng = np.random.default_rng(0)
    classes = 10 if name == "cifar10" else 100
    if name == "cifar10":
        folder, test_file, key = root / "cifar-10-batches-py", "test_batch", b"labels"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        meta = ("batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]})
    else:
        folder, test_file, key = root / "cifar-100-python", "test", b"fine_labels"
        train_files = ["train"]
        meta = ("meta", {b"fine_label_names": [b"c%d" % i for i in range(100)]})
    folder.mkdir(parents=True)
    images, labels = [], []
    for name_ in [*train_files, test_file]:
        batch = rng.integers(0, 256, size=(per_file, 3, 32, 32), dtype=np.uint8)
        batch_labels = [int(v) for v in rng.integers(0, classes, size=per_file)]
        _write_batch(folder / name_, batch, batch_labels, key)
        if name_ != test_file:
            images.append(batch)
            labels += batch_labels
    with open(folder / meta[0], "wb") as handle:
        pickle.dump(meta[1], handle)
    return np.concatenate(images), np.asarray(labels)


@pytest.mark.parametrize(
    ("name", "classes", "train_n"), [("cifar10", 10, 30), ("cifar100", 100, 6)]
)
def test_cifar_pickle_format(tmp_path: Path, name: str, classes: int, train_n: int) -> None:
    images, labels = _fake_cifar(tmp_path, name)
    data = load_dataset(name, TrialRuntime(device="cpu", data_dir=str(tmp_path)))
    assert data.train_x.shape == (train_n, 3, 32, 32) and data.test_x.shape == (6, 3, 32, 32)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert (data.num_classes, data.in_channels, data.image_size) == (classes, 3, 32)
    assert data.train_y.tolist() == labels.tolist()
    # Undo the normalisation: the pixels are the bytes / 255, channel-major as in the file.
    mean = torch.tensor(data.mean)[:, None, None]
    std = torch.tensor(data.std)[:, None, None]
    pixels = data.train_x * std + mean
    torch.testing.assert_close(pixels, torch.from_numpy(images).float() / 255, atol=1e-5, rtol=0)
    # Training-split statistics: per channel mean 0, std 1 on the training split.
    torch.testing.assert_close(data.train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.train_x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


def test_missing_cifar_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", TrialRuntime(device="cpu", data_dir=str(tmp_path)))
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "--download" in message and "\n" not in message
    assert isinstance(info.value, UsageError)  # exit code 2 in the CLI


def test_truncated_cifar_file_is_a_data_error(tmp_path: Path) -> None:
    _fake_cifar(tmp_path, "cifar100")
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="not a CIFAR python batch"):
        load_dataset("cifar100", TrialRuntime(device="cpu", data_dir=str(tmp_path)))


def test_data_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QGEN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root(TrialRuntime()) == tmp_path / "cache" / "qgen-sweep" / "data"
    monkeypatch.setenv("QGEN_DATA_DIR", str(tmp_path / "env"))
    assert data_root(TrialRuntime()) == tmp_path / "env"
    assert data_root(TrialRuntime(data_dir=str(tmp_path / "flag"))) == tmp_path / "flag"


def test_digits_split_is_stratified_and_deterministic() -> None:
    data = load_dataset("digits", CPU)
    assert data.train_x.shape == (1437, 1, 8, 8) and data.test_x.shape == (360, 1, 8, 8)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 8)
    train_counts = torch.bincount(data.train_y, minlength=10).float()
    test_counts = torch.bincount(data.test_y, minlength=10).float()
    # stratified: every class keeps ~80/20 (within one sample of rounding)
    assert ((test_counts - 0.25 * train_counts).abs() <= 1.5).all()
    pixels = data.train_x * data.std[0] + data.mean[0]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # 0..16 scaled to [0, 1]
    again = load_dataset("digits", CPU)
    assert torch.equal(again.test_x, data.test_x) and torch.equal(again.test_y, data.test_y)


def test_unknown_dataset_and_device() -> None:
    with pytest.raises(UsageError, match="dataset must be one of"):
        load_dataset("mnist", CPU)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            load_dataset("digits", TrialRuntime(device="cuda"))


def test_batches_are_a_seeded_permutation_without_the_ragged_batch() -> None:
    cpu = torch.device("cpu")
    first = batch_indices(103, 10, epoch_generator(7, 1, cpu))
    assert first.shape == (10, 10)  # 103 // 10 steps; the last 3 samples are dropped
    assert len(set(first.flatten().tolist())) == 100
    assert torch.equal(first, batch_indices(103, 10, epoch_generator(7, 1, cpu)))
    assert not torch.equal(first, batch_indices(103, 10, epoch_generator(7, 2, cpu)))
    assert not torch.equal(first, batch_indices(103, 10, epoch_generator(8, 1, cpu)))
    assert batch_indices(5, 128, epoch_generator(0, 1, cpu)).shape == (1, 5)


def test_crop_flip_takes_a_padded_window_of_each_image() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    out = crop_flip(x, epoch_generator(0, 1, torch.device("cpu")))
    assert out.shape == x.shape
    pad = CROP_PADDING
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(2):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(9) for dx in range(9)]
        windows += [w.flip(2) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)
    many = crop_flip(x.repeat(32, 1, 1, 1), epoch_generator(0, 2, torch.device("cpu")))
    assert not all(torch.equal(many[j], x[j % 2]) for j in range(64))  # it does change images
