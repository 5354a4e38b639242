"""Swin-T (Liu et al., 2021): torchvision's SwinTransformer (patch 4, window 7, depths
[2, 2, 6, 2], heads [3, 6, 12, 24], width 96), so torchvision's weights load by name.

torchvision's window attention hands `qkv.weight` and `proj.weight` to a functional kernel
instead of calling those nn.Linear layers, so LSQ wrapping of them would be bypassed: every
ShiftedWindowAttention becomes `WindowAttention`, which computes the same but reads both weights
through lsq.effective_weight (q * s once the layer is LSQ). The MLPs, the patch merging
reductions, the patch embedding and the head are plain conv / linear layers LSQ wraps directly.

Width = base_width x width (96 for Swin-T); heads [3, 6, 12, 24] (for a width 3 does not
divide, tiny test models, [1, 2, 4, 8]). No stochastic depth (torchvision's Swin-T default is
0.2): the protocol stays deterministic given the data order. Smaller images work: stages pad
to the window.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.swin_transformer import (
    ShiftedWindowAttention,
    SwinTransformer,
    shifted_window_attention,
)

from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.lsq import effective_weight

DEPTHS = (2, 2, 6, 2)
HEADS = (3, 6, 12, 24)
WINDOW, PATCH = 7, 4


class WindowAttention(ShiftedWindowAttention):
    """torchvision's ShiftedWindowAttention with its weights read through lsq.effective_weight."""

    def forward(self, x: Tensor) -> Tensor:  # (B, H, W, C) -> (B, H, W, C)
        return shifted_window_attention(
            x, effective_weight(self.qkv), effective_weight(self.proj),
            self.get_relative_position_bias(), self.window_size, self.num_heads,
            shift_size=self.shift_size, attention_dropout=self.attention_dropout,
            dropout=self.dropout, qkv_bias=self.qkv.bias, proj_bias=self.proj.bias,
            training=self.training)


def build(config: TrialConfig, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The float Swin-T of `config`."""
    dim = config.base_width * config.width
    # Stage i has width dim x 2^i: Swin-T's heads divide it when 3 divides dim; else 2^i heads.
    heads = list(HEADS) if dim % HEADS[0] == 0 else [2**i for i in range(len(DEPTHS))]
    model = SwinTransformer(patch_size=[PATCH, PATCH], embed_dim=dim, depths=list(DEPTHS),
                            num_heads=heads, window_size=[WINDOW, WINDOW],
                            stochastic_depth_prob=0.0, num_classes=num_classes)
    if in_channels != 3:
        model.features[0][0] = nn.Conv2d(in_channels, dim, PATCH, stride=PATCH)
    for module in model.modules():
        if type(module) is ShiftedWindowAttention:
            module.__class__ = WindowAttention
    return model
