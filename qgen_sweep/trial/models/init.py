"""The initialisation torchvision gives its VGG and MobileNet models, shared by ours."""

from __future__ import annotations

from torch import nn


def torchvision_init(model: nn.Module) -> None:
    """Kaiming-normal convs (fan out, ReLU gain), BN weight 1 and bias 0, linear layers
    N(0, 0.01); every bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)
