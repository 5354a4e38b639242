"""MobileNet-V1 (Howard et al., 2017) and MobileNet-V2 (Sandler et al., 2018).

Widths scale with m = base_width x width / 32 (base_width 32 is the papers' width multiplier 1).
Below STEM_MIN_SIZE pixels the CIFAR variants' strides are used (the stem at stride 1, and for V2
also the first 24-channel stage), so 32 px images end at 2x2 (V1) / 4x4 (V2) instead of 1x1.
V2's layout and names follow torchvision (features, classifier; channels rounded to multiples of
8, the last conv kept at 1280 for m < 1 as the paper does) without its dropout, so the protocol
stays deterministic given the data order. Init: Kaiming-normal convs (fan_out), BN 1 / 0,
linear N(0, 0.01) with zero bias, as torchvision.
"""

from __future__ import annotations

from torch import Tensor, nn

from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.models.init import torchvision_init

STEM_MIN_SIZE = 64  # pixels
# MobileNet-V1 after the stem: (out channels, stride) of each depthwise-separable block.
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# MobileNet-V2 (paper Table 2): expansion t, channels c, repeats n, stride s.
V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1))
V2_LAST = 1280


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1,
             act: type[nn.Module] | None = nn.ReLU) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out)]
    return layers + ([act(inplace=True)] if act is not None else [])


class MobileNetV1(nn.Module):
    """Stem conv, 13 blocks of depthwise 3x3 + pointwise 1x1 (each BN + ReLU), pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, mult: float, small: bool) -> None:
        super().__init__()
        width = lambda c: max(1, round(c * mult))  # noqa: E731
        layers = _conv_bn(in_channels, width(32), 3, 1 if small else 2)
        c_in = width(32)
        for c_out, stride in V1_BLOCKS:
            layers += _conv_bn(c_in, c_in, 3, stride, groups=c_in)  # depthwise
            layers += _conv_bn(c_in, width(c_out), 1, 1)  # pointwise
            c_in = width(c_out)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(c_in, num_classes)
        torchvision_init(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(self.features(x))


def _divisible(value: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: nearest multiple of 8, never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """1x1 expand (t > 1) + ReLU6, depthwise 3x3 + ReLU6, linear 1x1 project; residual when the
    shape is kept."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += _conv_bn(c_in, hidden, 1, 1, act=nn.ReLU6)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        layers += _conv_bn(hidden, c_out, 1, 1, act=None)
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """Stem conv, 17 inverted residual blocks, 1x1 conv to 1280, pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, mult: float, small: bool) -> None:
        super().__init__()
        c_in = _divisible(32 * mult)
        layers = _conv_bn(in_channels, c_in, 3, 1 if small else 2, act=nn.ReLU6)
        for index, (t, c, n, s) in enumerate(V2_SETTINGS):
            stride = 1 if small and index == 1 else s  # CIFAR variant keeps 32 px one stage longer
            for i in range(n):
                c_out = _divisible(c * mult)
                layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, t))
                c_in = c_out
        last = _divisible(V2_LAST * max(1.0, mult))
        layers += _conv_bn(c_in, last, 1, 1, act=nn.ReLU6)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(last, num_classes)
        torchvision_init(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(self.features(x))


def build(config: TrialConfig, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The float MobileNet-V1 / V2 of `config` (config.arch says which)."""
    mult = config.base_width * config.width / 32
    cls = MobileNetV1 if config.arch == "mobilenet_v1" else MobileNetV2
    # A pretrained start keeps torchvision's strides at any size (the weights do not depend on
    # them, but the features they were trained to produce do).
    small = image_size < STEM_MIN_SIZE and not config.pretrained
    return cls(in_channels, num_classes, mult, small=small)
