"""ResNet-18 and ResNet-50 (He et al., 2016), module names as torchvision's (conv1, bn1, layer1..4,
fc, downsample), so torchvision's state_dicts map onto the 224 px variant.

Stage widths are base x (1, 2, 4, 8) with base = base_width x width (the paper's CIFAR ResNets use
base_width 16; torchvision's ImageNet ResNets are base 64). Below STEM_MIN_SIZE pixels the stem
is the CIFAR one (3x3 conv, stride 1, no max-pool: 32 px reaches 4x4 before the pool, digits'
8 px 1x1); at and above it, and for every pretrained start (`config.pretrained`: the weights are
torchvision's 7x7 conv1), the ImageNet stem (7x7 conv stride 2 + 3x3 max-pool stride 2).
Init as torchvision: Kaiming-normal convs (fan_out), BN weight 1 and bias 0, default Linear.
"""

from __future__ import annotations

from torch import Tensor, nn

from qgen_sweep.trial.config import TrialConfig

STEM_MIN_SIZE = 64  # pixels: smaller images keep their resolution through the stem
BLOCKS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)


def _downsample(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """1x1 projection of the shortcut when the block changes shape (torchvision option B)."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(_conv(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convs and an identity (or projected) shortcut; out channels = planes."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's v1.5), 1x1 expand x4; shortcut."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1, self.bn1 = _conv(c_in, planes, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv(planes, out, 1), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, out, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """Stem, four stages of residual blocks (strides 1, 2, 2, 2), global pool, linear."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], counts: tuple[int, ...],
                 in_channels: int, num_classes: int, base: int, imagenet_stem: bool) -> None:
        super().__init__()
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, base, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = _conv(in_channels, base, 3)
            self.maxpool = nn.Identity()
        self.bn1, self.relu = nn.BatchNorm2d(base), nn.ReLU(inplace=True)
        c_in, stages = base, []
        for index, count in enumerate(counts):
            planes, blocks = base * 2**index, []
            for b in range(count):
                blocks.append(block(c_in, planes, 2 if index > 0 and b == 0 else 1))
                c_in = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def build(config: TrialConfig, in_channels: int, num_classes: int, image_size: int) -> ResNet:
    """The float ResNet-18 / ResNet-50 of `config` (config.arch says which)."""
    kind, counts = BLOCKS[config.arch]
    block = BasicBlock if kind == "basic" else Bottleneck
    # A pretrained start keeps torchvision's stem at any size: its weights are a 7x7 conv1.
    imagenet_stem = image_size >= STEM_MIN_SIZE or bool(config.pretrained)
    return ResNet(block, counts, in_channels, num_classes, config.base_width * config.width,
                  imagenet_stem=imagenet_stem)
