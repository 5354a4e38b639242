"""DeiT-Tiny (Touvron et al., 2021): torchvision's VisionTransformer at DeiT-T's sizes (12 blocks,
width 192, 3 heads, MLP 768, patch 16, class token), with one change: every block's
nn.MultiheadAttention becomes `Attention`, the same computation with its input projection as an
nn.Linear. nn.MultiheadAttention keeps that projection as a raw `in_proj_weight` parameter and
hands it to a functional kernel, so LSQ (which wraps nn.Linear / nn.Conv2d layers) would never
see it; as a Linear it is quantized like every other layer, one step size for the stacked
q, k, v projection (one layer, as DeiT's own `qkv`), another for the output projection.

Sizes: width = base_width x width (192 for DeiT-T), 3 heads (1 for a width 3 does not divide),
MLP 4 x width. Patch 16 at
64 px and above and for every pretrained start (the weights are 16 x 16 patches); below, patch
4 (the CIFAR ViT convention: 32 px -> 8 x 8 tokens). No dropout and no stochastic depth, so the
protocol is deterministic given the data order. Init as DeiT: linear layers truncated normal
(std 0.02) with zero bias (torchvision's zero head would give LSQ a zero step size), position
embedding and class token as torchvision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgen_sweep.trial.config import TrialConfig

HEADS = 3
DEPTH = 12
MLP_RATIO = 4
PATCH, SMALL_PATCH, SMALL_BELOW = 16, 4, 64  # pixels


class Attention(nn.Module):
    """Self-attention as nn.MultiheadAttention(batch_first=True) computes it, with `in_proj`
    (q, k, v stacked, as in_proj_weight) and `out_proj` as nn.Linear layers."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> Attention:
        """The same attention with `mha`'s parameter values."""
        attention = cls(mha.embed_dim, mha.num_heads)
        with torch.no_grad():
            attention.in_proj.weight.copy_(mha.in_proj_weight)
            attention.in_proj.bias.copy_(mha.in_proj_bias)
            attention.out_proj.weight.copy_(mha.out_proj.weight)
            attention.out_proj.bias.copy_(mha.out_proj.bias)
        return attention

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, None]:
        """(B, N, D) -> ((B, N, D), None): the call torchvision's EncoderBlock makes."""
        b, n, d = query.shape
        qkv = self.in_proj(query).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, D / heads)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(out), None


def patch_size(config: TrialConfig, image_size: int) -> int:
    """16 x 16 patches at 64 px and above or with pretrained weights, else 4 x 4."""
    return PATCH if image_size >= SMALL_BELOW or config.pretrained else SMALL_PATCH


def build(config: TrialConfig, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The float DeiT-T of `config` for (in_channels, image_size, image_size) images."""
    from torchvision.models.vision_transformer import VisionTransformer

    dim, patch = config.base_width * config.width, patch_size(config, image_size)
    heads = HEADS if dim % HEADS == 0 else 1  # tiny test widths 3 does not divide: one head
    if image_size % patch:
        raise ValueError(f"deit_t needs an image size that divides by its patch {patch}, "
                         f"but got {image_size}")
    model = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=DEPTH,
                              num_heads=heads, hidden_dim=dim, mlp_dim=MLP_RATIO * dim,
                              num_classes=num_classes)
    if in_channels != 3:
        model.conv_proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
    for layer in model.encoder.layers:
        layer.self_attention = Attention.from_mha(layer.self_attention)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
    return model


def from_torchvision(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision VisionTransformer state_dict -> this module's names (in_proj_weight ->
    in_proj.weight)."""
    out = {}
    for key, value in state.items():
        key = key.replace("self_attention.in_proj_weight", "self_attention.in_proj.weight")
        out[key.replace("self_attention.in_proj_bias", "self_attention.in_proj.bias")] = value
    return out


# DeiT's released checkpoints (timm's VisionTransformer names) -> this module's names.
_DEIT_NAMES = (("blocks.", "encoder.layers.encoder_layer_"), (".norm1.", ".ln_1."),
               (".norm2.", ".ln_2."), (".attn.qkv.", ".self_attention.in_proj."),
               (".attn.proj.", ".self_attention.out_proj."), (".mlp.fc1.", ".mlp.0."),
               (".mlp.fc2.", ".mlp.3."))
_DEIT_TOP = {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
             "patch_embed.proj.weight": "conv_proj.weight",
             "patch_embed.proj.bias": "conv_proj.bias", "norm.weight": "encoder.ln.weight",
             "norm.bias": "encoder.ln.bias", "head.weight": "heads.head.weight",
             "head.bias": "heads.head.bias"}


def from_deit(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A DeiT release state_dict (`deit_tiny_patch16_224`: cls_token, blocks.N.attn.qkv, ...) ->
    this module's names. Both stack q, k, v in that order, so values are kept as they are."""
    out = {}
    for key, value in state.items():
        if key in _DEIT_TOP:
            out[_DEIT_TOP[key]] = value
            continue
        for old, new in _DEIT_NAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def to_deit(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """This module's state_dict in the DeiT release's names (the inverse of from_deit)."""
    top = {new: old for old, new in _DEIT_TOP.items()}
    out = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        for old, new in reversed(_DEIT_NAMES):
            key = key.replace(new, old)
        out[key] = value
    return out


def convert(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Any of the accepted layouts (ours, torchvision's, DeiT's) -> ours."""
    if "cls_token" in state:
        return from_deit(state)
    return from_torchvision(state)


def resize_positions(state: dict[str, Tensor], image_size: int, patch: int) -> dict[str, Tensor]:
    """Position embeddings of a pretrained start at another resolution, bicubic-interpolated
    (torchvision's interpolate_embeddings: the class token's embedding is kept)."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    tokens = (image_size // patch) ** 2 + 1
    if state["encoder.pos_embedding"].shape[1] == tokens:
        return state
    return interpolate_embeddings(image_size, patch, state)
