"""NiN architecture: pinned conv weight counts, layer order, first/last-layer bits, batch of one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import LSQConv2d
from qgen_sweep.trial.models import build_model, conv_layers, conv_weight_count


def _config(**overrides: object) -> TrialConfig:
    values: dict = dict(dataset="cifar10", bits=32, optimizer="sgd", lr=0.1, weight_decay=0.0,
                        depth=2, width=8)
    values.update(overrides)
    return TrialConfig(**values)


@pytest.mark.parametrize(
    ("depth", "width", "expected"),
    [(2, 8, 527_400), (4, 12, 3_161_100)],  # science.md: the CIFAR-10 grid's smallest and largest
)
def test_conv_weight_count_is_pinned(depth: int, width: int, expected: int) -> None:
    for bits in (32, 4):
        model = build_model(_config(depth=depth, width=width, bits=bits), 3, 10)
        assert conv_weight_count(model) == expected


def test_every_conv_is_followed_by_bn_then_relu_and_the_head_pools() -> None:
    model = build_model(_config(depth=3, width=1, base_width=4), 3, 10)
    layers = list(model.layers)
    convs = conv_layers(model)
    assert len(convs) == 3 * 3 + 1
    for conv in convs:
        i = layers.index(conv)
        assert isinstance(layers[i + 1], nn.BatchNorm2d)
        assert layers[i + 1].num_features == conv.out_channels
        assert isinstance(layers[i + 2], nn.ReLU)
    assert [c.kernel_size for c in convs[:3]] == [(3, 3), (1, 1), (1, 1)]
    assert convs[0].stride == (2, 2) and convs[0].in_channels == 3
    assert convs[-1].out_channels == 10
    assert all(conv.bias is not None for conv in convs)
    assert isinstance(layers[-2], nn.AdaptiveAvgPool2d) and isinstance(layers[-1], nn.Flatten)


def test_fp32_has_no_quantizer_and_first_last_policy() -> None:
    fp32 = build_model(_config(bits=32), 3, 10)
    assert not any(isinstance(m, LSQConv2d) for m in fp32.modules())
    assert not any("step_size" in name for name, _ in fp32.named_parameters())

    int2 = conv_layers(build_model(_config(bits=2), 3, 10))
    assert all(isinstance(c, LSQConv2d) for c in int2)
    assert [c.bits for c in int2] == [8] + [2] * (len(int2) - 2) + [8]

    same = conv_layers(build_model(_config(bits=2, first_last="same"), 3, 10))
    assert {c.bits for c in same} == {2}


@pytest.mark.parametrize("bits", [32, 2])
def test_batch_of_one_and_image_shapes(bits: int) -> None:
    model = build_model(_config(bits=bits, depth=5, width=1, base_width=4, dataset="cifar100"),
                        3, 100)
    model.eval()  # depth 5 reaches 1x1: BN needs eval mode for a single sample at 1x1
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    digits = build_model(_config(dataset="digits", bits=bits, width=2, base_width=8), 1, 10)
    digits.train()
    out = digits(torch.randn(1, 1, 8, 8))  # 8x8 -> 4x4 -> 2x2: BN works in train mode
    assert out.shape == (1, 10)
    assert (out >= 0).all()  # ReLU before pooling: non-negative logits (reference design)
