"""VGG-19 with batch norm (Simonyan & Zisserman, 2015; BN as torchvision's vgg19_bn), in the CIFAR
form the generalization literature trains: 16 3x3 convs (with biases) + BN + ReLU in five stages,
a global average pool and one linear classifier (no 4096-wide head).

Widths are (64, 128, 256, 512, 512) x base_width x width / 64. A stage's 2x2 max-pool is left out
once the feature map is 1x1 (digits' 8 px reach it after three stages); 32 px end at 1x1 and
224 px at 7x7, pooled to 1x1. Init as torchvision: Kaiming-normal convs (fan_out), zero biases,
BN 1 / 0, linear N(0, 0.01).
"""

from __future__ import annotations

from torch import Tensor, nn

from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.models.init import torchvision_init

STAGES = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))  # (channels, convs) per stage


class VGG(nn.Module):
    """features (conv-BN-ReLU stages with max-pools), global pool, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, scale: float, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for channels, convs in STAGES:
            c_out = max(1, round(channels * scale))
            for _ in range(convs):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                           nn.ReLU(inplace=True)]
                c_in = c_out
            if size > 1:
                layers.append(nn.MaxPool2d(2, 2))
                size //= 2
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(c_in, num_classes)
        torchvision_init(self)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        return self.classifier(self.features(x))


def build(config: TrialConfig, in_channels: int, num_classes: int, image_size: int) -> VGG:
    """The float VGG-19-BN of `config`."""
    return VGG(in_channels, num_classes, config.base_width * config.width / 64, image_size)
