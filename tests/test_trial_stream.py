"""The imagenet streaming source on tiny ImageFolder trees of real JPEG files: decoding against
Pillow, the crops against torchvision's transforms, batch order, data-parallel shards, the
evaluation pass, and the one-line errors for a tree that is not there."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qgen_sweep.errors import DataError
from qgen_sweep.trial.data import epoch_generator
from qgen_sweep.trial.imagefolder import check_imagenet, scan
from qgen_sweep.trial.stream import (
    CROP_RATIO,
    CROP_SCALE,
    PARAMS,
    Shard,
    decode,
    open_imagenet,
    random_box,
    read_bytes,
    transform,
)
from tests.imagenet_helpers import class_image, make_imagenet, write_jpeg


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_imagenet(root, classes=3, train_per_class=6, val_per_class=2)
    return root


def test_decode_matches_pillow(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    colour, grey = tmp_path / "c.JPEG", tmp_path / "g.JPEG"
    write_jpeg(colour, class_image(2, rng, 45, 53))
    write_jpeg(grey, class_image(1, rng, 30, 20).mean(axis=2).astype(np.uint8))
    for path in (colour, grey):
        ours = decode(read_bytes(str(path))).permute(1, 2, 0).numpy().astype(int)
        pil = np.asarray(Image.open(path).convert("RGB")).astype(int)
        assert ours.shape == pil.shape
        assert np.abs(ours - pil).max() <= 2  # both libjpeg; IDCT rounding may differ by 1-2


def test_evaluation_crop_matches_torchvision_resize_center_crop():
    """Resize(256) + CenterCrop(224) as one crop: the same picture within interpolation noise."""
    from sklearn.datasets import load_sample_images
    from torchvision.transforms import v2

    picture = load_sample_images().images[1]  # 427 x 640 photograph
    image = torch.from_numpy(picture.copy()).permute(2, 0, 1).contiguous()
    reference = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])(image)
    ours = transform(image, 224, None)
    assert ours.shape == reference.shape == (3, 224, 224)
    assert torch.equal(ours, reference)


def test_random_box_follows_random_resized_crop_rules():
    rng = np.random.default_rng(0)
    fallbacks = 0
    for _ in range(400):
        height, width = int(rng.integers(20, 300)), int(rng.integers(20, 300))
        u = rng.random(PARAMS).tolist()
        top, left, h, w = random_box(height, width, u)
        assert top >= 0 and top + h <= height and left >= 0 and left + w <= width
        area = h * w / (height * width)
        # rounding of w and h moves area and ratio by at most ~one pixel's worth
        if not (CROP_SCALE[0] * 0.8 <= area <= 1.0):
            fallbacks += 1
        assert CROP_RATIO[0] * 0.8 <= w / h <= CROP_RATIO[1] * 1.25 or (h, w) == (height, width)
    assert fallbacks == 0
    # every attempt asks for the whole area at aspect 4/3: none fits a square, so the
    # torchvision fallback (the whole image, its ratio being allowed) is used
    assert random_box(100, 100, [1 - 1e-9] * PARAMS) == (0, 0, 100, 100)
    # a panorama falls back to the central crop at the widest allowed ratio
    assert random_box(50, 400, [1 - 1e-9] * PARAMS) == (0, 166, 50, 67)


def test_scan_orders_classes_and_labels(tree):
    index = scan(tree / "imagenet" / "train")
    assert index.classes == ("n00000000", "n00000001", "n00000002")
    assert len(index) == 18 and sorted(set(index.labels)) == [0, 1, 2]
    assert all(f"/{index.classes[y]}/" in p for p, y in zip(index.paths, index.labels, strict=True))


def test_train_batches_are_seeded_and_shards_split_them(tree):
    source = open_imagenet(tree, 24, torch.device("cpu"))
    assert source.num_classes == 3 and len(source.train) == 18

    def epoch(shard=Shard()):
        gen = epoch_generator(seed=3, epoch=2, device=torch.device("cpu"))
        return list(source.train_batches(gen, 4, augment=True, shard=shard))

    first, again = epoch(), epoch()
    assert len(first) == 18 // 4  # the ragged last batch is dropped
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32
        assert torch.equal(x, x2) and torch.equal(y, y2)
    halves = [epoch(Shard(rank, 2)) for rank in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(first, *halves, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    other = epoch_generator(seed=3, epoch=3, device=torch.device("cpu"))
    assert not torch.equal(next(iter(source.train_batches(other, 4, True)))[0], first[0][0])


def test_eval_pass_covers_the_split_once_with_workers(tree):
    source = open_imagenet(tree, 16, torch.device("cpu"), workers=2)
    labels = torch.cat([y for _, y in source.eval_batches("val", 4)])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    shards = [torch.cat([y for _, y in source.eval_batches("val", 4, Shard(r, 2))])
              for r in (0, 1)]
    assert sum(len(s) for s in shards) == 6
    x, _ = next(iter(source.eval_batches("train", 18)))
    # normalised with ImageNet statistics: finite, roughly centred values
    assert torch.isfinite(x).all() and -3 < float(x.mean()) < 3 and math.isfinite(float(x.std()))


def test_missing_tree_is_one_line_naming_the_layout(tmp_path):
    with pytest.raises(DataError) as caught:
        check_imagenet(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "train/<wnid>/*.JPEG" in message and "--data-dir" in message
    (tmp_path / "imagenet" / "train" / "n01").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no .JPEG"):
        check_imagenet(tmp_path)


def test_validation_class_outside_training_is_an_error(tmp_path):
    make_imagenet(tmp_path, classes=2, train_per_class=1, val_per_class=1)
    write_jpeg(tmp_path / "imagenet" / "val" / "n99999999" / "x.JPEG",
               class_image(0, np.random.default_rng(0), 40, 40))
    with pytest.raises(DataError, match="n99999999"):
        open_imagenet(tmp_path, 16, torch.device("cpu"))
