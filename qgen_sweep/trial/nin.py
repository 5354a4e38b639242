"""Network-in-Network as in the reference code the QGen paper builds on (science.md).

Block: 3x3 conv stride 2 padding 1 -> BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN ->
ReLU, with channels = base_width x width. `depth` blocks, then a head: 1x1 conv to the classes ->
BN -> ReLU -> global average pool -> flatten. Convs have biases and PyTorch's default init.
Quantized trials use LSQConv2d for every conv; FP32 trials (bits 32) use plain nn.Conv2d.
"""

from __future__ import annotations

from torch import Tensor, nn

from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import LSQConv2d

FIRST_LAST_BITS = 8  # LSQ paper: first and last layers at 8 bits (first_last="int8")


class NiN(nn.Module):
    """NiN classifier; `layers` is one flat Sequential: conv, BN, ReLU, conv, BN, ReLU, ..."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        return self.layers(x)


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, bits: int) -> nn.Conv2d:
    padding = kernel // 2
    if bits == 32:
        return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding)
    return LSQConv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bits=bits)


def _layer_bits(config: TrialConfig, index: int, count: int) -> int:
    """Bits of conv number `index` of `count` under the first/last-layer policy."""
    if config.bits == 32 or config.first_last == "same":
        return config.bits
    return FIRST_LAST_BITS if index in (0, count - 1) else config.bits


def build_model(config: TrialConfig, in_channels: int, num_classes: int) -> NiN:
    """Build the NiN of `config` for images with `in_channels` channels and `num_classes` classes.

    Initialisation uses torch's global RNG: seed it first for a reproducible model.
    """
    channels = config.base_width * config.width
    # (in, out, kernel, stride) of every conv in network order: 3 per block, then the head.
    specs: list[tuple[int, int, int, int]] = []
    for block in range(config.depth):
        first_in = in_channels if block == 0 else channels
        specs.append((first_in, channels, 3, 2))
        specs += [(channels, channels, 1, 1)] * 2
    specs.append((channels, num_classes, 1, 1))
    modules: list[nn.Module] = []
    for index, (c_in, c_out, kernel, stride) in enumerate(specs):
        bits = _layer_bits(config, index, len(specs))
        modules += [_conv(c_in, c_out, kernel, stride, bits), nn.BatchNorm2d(c_out), nn.ReLU()]
    # Adaptive pooling + flatten (not squeeze) keeps the batch axis for a batch of one. The ReLU
    # before pooling (non-negative logits) is the reference design; science.md says keep it.
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    return NiN(nn.Sequential(*modules))


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    """Every conv (nn.Conv2d or LSQConv2d) of `model` in network order."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def conv_weight_count(model: nn.Module) -> int:
    """Number of conv weights (omega: no biases, BN parameters or step sizes)."""
    return sum(conv.weight.numel() for conv in conv_layers(model))
