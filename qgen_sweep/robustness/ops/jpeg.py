"""JPEG compression as tensor ops: what Pillow's `save(format="JPEG", quality=q)` and reopen do
with libjpeg's defaults (baseline, 4:2:0 chroma subsampling, standard tables scaled by quality,
"fancy" triangle-filter upsampling on decode).

Every step follows libjpeg's integer arithmetic: the fixed-point colour conversions, the
2 x 2 subsampling with its alternating bias, the "islow" integer DCT and inverse DCT, the
quantiser's rounding, and the triangle-filter upsampling.
x (B, C, H, W) float64 in [0, 1] -> pixel values in [0, 255] (integers).
"""

from __future__ import annotations

import torch
from torch import Tensor

# ITU-T T.81 Annex K tables, in natural (row-major) order.
LUMA_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
CHROMA_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
    *([99] * 32),
)
SCALE_BITS = 16  # libjpeg's colour conversions: 16 fractional bits
ONE_HALF = 1 << (SCALE_BITS - 1)


def fix(value: float) -> int:
    """libjpeg's FIX(x): x in 16-bit fixed point, rounded."""
    return int(value * (1 << SCALE_BITS) + 0.5)


def quant_table(base: tuple[int, ...], quality: int, device: torch.device) -> Tensor:
    """(8, 8) table scaled as jpeg_set_quality(quality, force_baseline=TRUE) does."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    values = [min(max((b * scale + 50) // 100, 1), 255) for b in base]
    return torch.tensor(values, dtype=torch.float64, device=device).view(8, 8)


# libjpeg's "islow" integer DCT (the Loeffler-Ligtenberg-Moschytz factorisation): 13-bit
# constants, 2 extra bits of precision between the two passes.
CONST_BITS, PASS1_BITS = 13, 2
C = {name: int(value * (1 << CONST_BITS) + 0.5) for name, value in {
    "0.298631336": 0.298631336, "0.390180644": 0.390180644, "0.541196100": 0.541196100,
    "0.765366865": 0.765366865, "0.899976223": 0.899976223, "1.175875602": 1.175875602,
    "1.501321110": 1.501321110, "1.847759065": 1.847759065, "1.961570560": 1.961570560,
    "2.053119869": 2.053119869, "2.562915447": 2.562915447, "3.072711026": 3.072711026,
}.items()}


def _descale(value: Tensor, bits: int) -> Tensor:
    """Right shift by `bits`, rounding (libjpeg's DESCALE)."""
    return (value + (1 << (bits - 1))) >> bits


def _odd(t4: Tensor, t5: Tensor, t6: Tensor, t7: Tensor) -> tuple[Tensor, ...]:
    """The odd part shared by the forward and inverse transforms (inputs in the forward DCT's
    naming); returns the four rotated sums, not yet descaled."""
    z5 = (t4 + t5 + t6 + t7) * C["1.175875602"]
    z1, z2 = (t4 + t7) * -C["0.899976223"], (t5 + t6) * -C["2.562915447"]
    z3, z4 = (t4 + t6) * -C["1.961570560"] + z5, (t5 + t7) * -C["0.390180644"] + z5
    return (t4 * C["0.298631336"] + z1 + z3, t5 * C["2.053119869"] + z2 + z4,
            t6 * C["3.072711026"] + z2 + z3, t7 * C["1.501321110"] + z1 + z4)


def _fdct_1d(d: Tensor, first: bool) -> Tensor:
    """One pass of the forward islow DCT along the last dimension (8 values)."""
    v = d.unbind(-1)
    t0, t7, t1, t6 = v[0] + v[7], v[0] - v[7], v[1] + v[6], v[1] - v[6]
    t2, t5, t3, t4 = v[2] + v[5], v[2] - v[5], v[3] + v[4], v[3] - v[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    shift = CONST_BITS - PASS1_BITS if first else CONST_BITS + PASS1_BITS
    if first:
        out0, out4 = (t10 + t11) << PASS1_BITS, (t10 - t11) << PASS1_BITS
    else:
        out0, out4 = _descale(t10 + t11, PASS1_BITS), _descale(t10 - t11, PASS1_BITS)
    z1 = (t12 + t13) * C["0.541196100"]
    out2 = _descale(z1 + t13 * C["0.765366865"], shift)
    out6 = _descale(z1 - t12 * C["1.847759065"], shift)
    o7, o5, o3, o1 = (_descale(t, shift) for t in _odd(t4, t5, t6, t7))
    return torch.stack((out0, o1, out2, o3, out4, o5, out6, o7), dim=-1)


def fdct(blocks: Tensor) -> Tensor:
    """libjpeg's jpeg_fdct_islow of level-shifted integer blocks (..., 8, 8): 8 x the
    orthonormal DCT, rounded as libjpeg rounds."""
    rows = _fdct_1d(blocks, first=True)
    return _fdct_1d(rows.transpose(-1, -2), first=False).transpose(-1, -2)


def _idct_1d(v: tuple[Tensor, ...], shift: int, first: bool) -> Tensor:
    """One pass of the inverse islow DCT over the 8 values `v`."""
    z1 = (v[2] + v[6]) * C["0.541196100"]
    t2, t3 = z1 - v[6] * C["1.847759065"], z1 + v[2] * C["0.765366865"]
    t0, t1 = (v[0] + v[4]) << CONST_BITS, (v[0] - v[4]) << CONST_BITS
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd(v[7], v[5], v[3], v[1])
    out = (t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3)
    return torch.stack([_descale(t, shift) for t in out], dim=-1)


def idct(coefficients: Tensor) -> Tensor:
    """libjpeg's jpeg_idct_islow of dequantised integer blocks (..., 8, 8), level shift added
    back and clamped to 0..255."""
    columns = _idct_1d(coefficients.transpose(-1, -2).unbind(-1), CONST_BITS - PASS1_BITS, True)
    rows = _idct_1d(columns.transpose(-1, -2).unbind(-1), CONST_BITS + PASS1_BITS + 3, False)
    return (rows + 128).clamp(0, 255)


def _blocks(plane: Tensor) -> Tensor:
    """(B, H, W) -> (B, H/8, W/8, 8, 8)."""
    b, h, w = plane.shape
    return plane.reshape(b, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(blocks: Tensor) -> Tensor:
    b, bh, bw = blocks.shape[:3]
    return blocks.permute(0, 1, 3, 2, 4).reshape(b, bh * 8, bw * 8)


def code_plane(plane: Tensor, table: Tensor) -> Tensor:
    """Encode and decode one component (B, H, W) of integer levels (H, W multiples of 8):
    level shift, forward DCT, quantise (round half away from zero), dequantise, inverse DCT."""
    table = table.long()
    coefficients = fdct(_blocks(plane.long() - 128))
    quantised = torch.sign(coefficients) * ((coefficients.abs() + 4 * table) // (8 * table))
    return _unblocks(idct(quantised * table))


def rgb_to_ycc(rgb: Tensor) -> Tensor:
    """libjpeg's rgb_ycc_convert on integer levels (B, 3, H, W)."""
    r, g, b = (channel.long() for channel in rgb.unbind(1))
    offset = (128 << SCALE_BITS) + ONE_HALF - 1
    y = (fix(0.299) * r + fix(0.587) * g + fix(0.114) * b + ONE_HALF) >> SCALE_BITS
    cb = (-fix(0.16874) * r - fix(0.33126) * g + fix(0.5) * b + offset) >> SCALE_BITS
    cr = (fix(0.5) * r - fix(0.41869) * g - fix(0.08131) * b + offset) >> SCALE_BITS
    return torch.stack((y, cb, cr), dim=1)


def ycc_to_rgb(ycc: Tensor) -> Tensor:
    """libjpeg's ycc_rgb_convert (integer tables, arithmetic shifts, clamping)."""
    y, cb, cr = (channel.long() for channel in ycc.unbind(1))
    cb, cr = cb - 128, cr - 128
    r = y + ((fix(1.40200) * cr + ONE_HALF) >> SCALE_BITS)
    g = y + ((-fix(0.34414) * cb + ONE_HALF - fix(0.71414) * cr) >> SCALE_BITS)
    b = y + ((fix(1.77200) * cb + ONE_HALF) >> SCALE_BITS)
    return torch.stack((r, g, b), dim=1).clamp(0, 255)


def downsample(plane: Tensor) -> Tensor:
    """libjpeg's h2v2_downsample: 2 x 2 sums plus a bias of 1, 2, 1, 2, ... along the row, / 4."""
    total = (plane[:, 0::2, 0::2] + plane[:, 0::2, 1::2] + plane[:, 1::2, 0::2]
             + plane[:, 1::2, 1::2])
    bias = 1 + (torch.arange(total.shape[-1], device=plane.device) % 2)
    return (total + bias) >> 2


def upsample(plane: Tensor) -> Tensor:
    """libjpeg's h2v2_fancy_upsample: 3/4, 1/4 triangle filter vertically, then horizontally
    with rounding biases 8 and 7; borders repeat the edge row and column."""
    above = torch.cat((plane[:, :1], plane[:, :-1]), dim=1)
    below = torch.cat((plane[:, 1:], plane[:, -1:]), dim=1)
    rows = torch.stack((3 * plane + above, 3 * plane + below), dim=2).flatten(1, 2)  # (B, 2H, W)
    left = torch.cat((rows[:, :, :1], rows[:, :, :-1]), dim=2)
    right = torch.cat((rows[:, :, 1:], rows[:, :, -1:]), dim=2)
    even, odd = (3 * rows + left + 8) >> 4, (3 * rows + right + 7) >> 4
    return torch.stack((even, odd), dim=3).flatten(2, 3)


def _pad_to(levels: Tensor, multiple: int) -> Tensor:
    """Repeat the last row and column up to a multiple of the MCU size, as libjpeg does."""
    h, w = levels.shape[-2:]
    rows = torch.arange(-(-h // multiple) * multiple, device=levels.device).clamp(max=h - 1)
    cols = torch.arange(-(-w // multiple) * multiple, device=levels.device).clamp(max=w - 1)
    return levels.index_select(-2, rows).index_select(-1, cols)


def jpeg_compression(x: Tensor, quality: int, generator: torch.Generator) -> Tensor:
    """Encode and decode at `quality`; a grey image is one luminance component."""
    h, w = x.shape[-2:]
    levels = torch.round(x * 255)
    luma = quant_table(LUMA_TABLE, quality, x.device)
    if x.shape[1] == 1:
        plane = _pad_to(levels, 8)[:, 0]
        return code_plane(plane, luma)[:, None, :h, :w].double()
    ycc = rgb_to_ycc(_pad_to(levels, 16))
    chroma = quant_table(CHROMA_TABLE, quality, x.device)
    y = code_plane(ycc[:, 0], luma)
    cb, cr = (upsample(code_plane(downsample(ycc[:, k]), chroma))
              for k in (1, 2))
    return ycc_to_rgb(torch.stack((y, cb, cr), dim=1))[..., :h, :w].double()
