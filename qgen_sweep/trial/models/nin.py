"""Network-in-Network as in the reference code the QGen paper builds on (docs/science.md).

Block: 3x3 conv stride 2 padding 1 -> BN -> ReLU -> 1x1 conv -> BN -> ReLU -> 1x1 conv -> BN ->
ReLU, with channels = base_width x width. `depth` blocks, then a head: 1x1 conv to the classes ->
BN -> ReLU -> global average pool -> flatten. Convs have biases and PyTorch's default init.
The network is built in floating point; qgen_sweep.trial.models.build_model wraps its convs in
LSQ quantizers (qgen_sweep.trial.lsq) for quantized trials.
"""

from __future__ import annotations

from torch import Tensor, nn

from qgen_sweep.trial.config import TrialConfig


class NiN(nn.Module):
    """NiN classifier; `layers` is one flat Sequential: conv, BN, ReLU, conv, BN, ReLU, ...

    The fused engine (trial/fused.py) and the measures' fast path read this flat layout.
    """

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, classes)
        return self.layers(x)


def build(config: TrialConfig, in_channels: int, num_classes: int, image_size: int) -> NiN:
    """The float NiN of `config` (any image size: each block halves it, down to 1x1)."""
    del image_size  # stride-2 convs with padding 1 work at every size
    channels = config.base_width * config.width
    # (in, out, kernel, stride) of every conv in network order: 3 per block, then the head.
    specs: list[tuple[int, int, int, int]] = []
    for block in range(config.depth):
        first_in = in_channels if block == 0 else channels
        specs.append((first_in, channels, 3, 2))
        specs += [(channels, channels, 1, 1)] * 2
    specs.append((channels, num_classes, 1, 1))
    modules: list[nn.Module] = []
    for c_in, c_out, kernel, stride in specs:
        conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
        modules += [conv, nn.BatchNorm2d(c_out), nn.ReLU()]
    # Adaptive pooling + flatten (not squeeze) keeps the batch axis for a batch of one. The ReLU
    # before pooling (non-negative logits) is the reference design; docs/science.md keeps it.
    modules += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    return NiN(nn.Sequential(*modules))
