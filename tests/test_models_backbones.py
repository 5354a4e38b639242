"""The registered backbones: pinned parameter counts, every input size (digits 1x8x8, CIFAR
3x32x32, 224 px), LSQ on every conv and linear layer (depthwise included) with the first/last
policy, torchvision-compatible ResNet weights, a batch of one.

Parameter counts are counted on torch's meta device (nothing is allocated); the values are the
published ones: CIFAR ResNet-18 11.17M and ResNet-50 23.52M at width 64, MobileNet-V1 4.23M and
MobileNet-V2 3.50M on ImageNet (torchvision's), VGG-19-BN with one linear head 20.04M on CIFAR.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qgen_sweep.trial.archs import ARCH_NAMES, ARCHS
from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import LSQConv2d, LSQLinear, LSQWeight, weight_layers
from qgen_sweep.trial.models import build_model, parameter_count


def _config(arch: str, bits: int = 32, **kw: object) -> TrialConfig:
    values: dict = dict(dataset="cifar10", bits=bits, optimizer="sgd", lr=0.1, weight_decay=0.0,
                        arch=arch, depth=2, width=1)
    return TrialConfig(**{**values, **kw})


def _count(config: TrialConfig, channels: int, classes: int, size: int) -> int:
    with torch.device("meta"):
        return parameter_count(build_model(config, channels, classes, size))


@pytest.mark.parametrize(("arch", "base_width", "classes", "size", "expected"), [
    ("resnet18", 64, 10, 32, 11_173_962),  # the CIFAR ResNet-18 figure
    ("resnet50", 64, 10, 32, 23_520_842),
    ("resnet18", 64, 1000, 224, 11_689_512),  # torchvision resnet18
    ("resnet50", 64, 1000, 224, 25_557_032),  # torchvision resnet50
    ("resnet18", 16, 10, 32, 701_466),  # the paper's CIFAR width (the default)
    ("resnet50", 16, 10, 32, 1_484_186),
    ("resnet50", 16, 100, 32, 1_530_356),  # = the 10-class 1,484,186 + 90 x (512 + 1)
    ("mobilenet_v1", 32, 1000, 224, 4_231_976),  # MobileNet-V1 paper: 4.2M
    ("mobilenet_v1", 32, 10, 32, 3_217_226),
    ("mobilenet_v2", 32, 1000, 224, 3_504_872),  # torchvision mobilenet_v2
    ("mobilenet_v2", 32, 10, 32, 2_236_682),
    ("vgg19", 64, 10, 32, 20_040_522),
    ("deit_t", 192, 1000, 224, 5_717_416),  # DeiT paper: DeiT-Ti 5.7M
    ("deit_t", 192, 10, 32, 5_362_762),  # patch 4 below 64 px: 65 position embeddings
    ("swin_t", 96, 1000, 224, 28_288_354),  # torchvision swin_t: 28.3M
])
def test_parameter_counts_are_pinned(arch: str, base_width: int, classes: int, size: int,
                                     expected: int) -> None:
    for bits in (32, 2):  # LSQ adds step sizes only, never weights
        assert _count(_config(arch, bits, base_width=base_width), 3, classes, size) == expected


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_every_arch_runs_every_input_size(arch: str) -> None:
    torch.manual_seed(0)
    digits = build_model(_config(arch, 4, base_width=4), 1, 7, 8)
    out = digits.train()(torch.randn(2, 1, 8, 8))  # BN in train mode needs B > 1
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in digits.parameters())
    _eval_batch_of_one(arch, 32)


def _eval_batch_of_one(arch: str, size: int) -> None:
    model = build_model(_config(arch, 4, base_width=4), 3, 7, size).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 7)


@pytest.mark.slow  # ~5 s per arch on 2 loaded cores
@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_every_arch_runs_at_224_px(arch: str) -> None:
    _eval_batch_of_one(arch, 224)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_lsq_wraps_every_conv_and_linear_with_the_first_last_policy(arch: str) -> None:
    with torch.device("meta"):
        layers = weight_layers(build_model(_config(arch, 2, base_width=8), 3, 10, 32))
        same = weight_layers(build_model(_config(arch, 2, base_width=8, first_last="same"),
                                         3, 10, 32))
        fp32 = build_model(_config(arch, 32, base_width=8), 3, 10, 32)
    assert all(isinstance(layer, LSQWeight) for layer in layers)
    assert [layer.bits for layer in layers] == [8] + [2] * (len(layers) - 2) + [8]
    assert {layer.bits for layer in same} == {2}
    assert not any(isinstance(m, LSQWeight) for m in fp32.modules())
    if arch != "nin":
        assert isinstance(layers[-1], LSQLinear)  # the classifier
    if arch.startswith("mobilenet"):  # depthwise convs are quantized too
        assert any(isinstance(m, LSQConv2d) and m.groups == m.in_channels > 1 for m in layers)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_at_224_px_takes_torchvision_weights(arch: str) -> None:
    import torchvision

    with torch.device("meta"):
        ours = build_model(_config(arch, base_width=64), 3, 1000, 224)
        theirs = getattr(torchvision.models, arch)()
    assert ours.load_state_dict(theirs.state_dict(), strict=True, assign=True) is not None
    assert [type(m) for m in ours.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))] == \
        [type(m) for m in theirs.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d))]


def test_small_inputs_use_the_cifar_stem() -> None:
    with torch.device("meta"):
        resnet = build_model(_config("resnet18"), 3, 10, 32)
        v2 = build_model(_config("mobilenet_v2"), 3, 10, 32)
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert isinstance(resnet.maxpool, nn.Identity)
    assert v2.features[0].stride == (1, 1)


def test_registry_entries_all_build() -> None:
    assert ARCH_NAMES[0] == "nin" and set(ARCHS) == set(ARCH_NAMES)
    for name in ARCH_NAMES:
        with torch.device("meta"):
            assert isinstance(build_model(_config(name), 3, 10, 32), nn.Module)
