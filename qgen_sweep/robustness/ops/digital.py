"""Digital corruptions: brightness, contrast, saturation, elastic transform, pixelation.
x (B, C, H, W) float64 in [0, 1] -> pixel values in [0, 255]. Colour ops treat a grey image as
R = G = B and return its luma.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from qgen_sweep.robustness.ops.common import (
    bilinear,
    gaussian_filter,
    hsv_to_rgb,
    like_input,
    rgb_to_hsv,
    to_rgb,
    uniform,
)


def brightness(x: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """HSV value + amount (clipped to 1)."""
    hsv = rgb_to_hsv(to_rgb(x))
    hsv = torch.cat((hsv[:, :2], (hsv[:, 2:] + amount).clamp(0, 1)), dim=1)
    return like_input(hsv_to_rgb(hsv), x.shape[1]).clamp(0, 1) * 255


def contrast(x: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    """Deviations from each channel's mean scaled by `factor`."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1) * 255


def saturate(x: Tensor, params: tuple[float, float], generator: torch.Generator) -> Tensor:
    """HSV saturation s -> s * a + b (clipped to [0, 1])."""
    scale, shift = params
    hsv = rgb_to_hsv(to_rgb(x))
    hsv = torch.cat((hsv[:, :1], (hsv[:, 1:2] * scale + shift).clamp(0, 1), hsv[:, 2:]), dim=1)
    return like_input(hsv_to_rgb(hsv), x.shape[1]).clamp(0, 1) * 255


# ------------------------------------------------------------------------------------ pixelate


def box_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of Pillow's BOX resampling along one axis: output pixel i averages
    the input pixels whose centres fall in its footprint (i, i + 1] * n_in / n_out."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), n_in)
        for j in range(low, high):
            offset = (j - centre + 0.5) / max(scale, 1.0)
            matrix[i, j] = 1.0 if -0.5 < offset <= 0.5 else 0.0
        matrix[i] /= matrix[i].sum()
    return matrix


def _resize_box(levels: Tensor, height: int, width: int) -> Tensor:
    """Pillow's 8-bit BOX resize of levels (B, C, H, W) in 0..255: horizontal pass, rounded to
    a level, then vertical pass, rounded."""
    h, w = levels.shape[-2:]
    cols = torch.from_numpy(box_matrix(w, width)).to(levels)
    rows = torch.from_numpy(box_matrix(h, height)).to(levels)
    across = torch.floor(torch.einsum("bchw,vw->bchv", levels, cols) + 0.5)
    return torch.floor(torch.einsum("bchv,uh->bcuv", across, rows) + 0.5)


def pixelate(x: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    """Pillow BOX resize down to int(size * factor), then BOX back up to the size."""
    h, w = x.shape[-2:]
    levels = torch.round(x * 255)  # the image as 8-bit levels, as Pillow holds it
    small = _resize_box(levels, int(h * factor), int(w * factor))
    return _resize_box(small, h, w)


# --------------------------------------------------------------------------- elastic transform
def affine_draws(batch: int, jitter: float, generator: torch.Generator,
                 device: torch.device) -> Tensor:
    """(B, 3, 2) jitter of the three anchor points, uniform in [-jitter, jitter]."""
    return uniform((batch, 3, 2), -jitter, jitter, generator, device).float().double()


def anchor_points(h: int, w: int) -> Tensor:
    """The three (x, y) anchor points of the random affine map around the image centre."""
    centre = np.float32([h, w]) // 2
    side = min(h, w) // 3
    points = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    return torch.from_numpy(points).double()


def affine_warp(x: Tensor, jitter: Tensor) -> Tensor:
    """OpenCV's warpAffine of each image by the affine map sending the anchor points to the
    anchor points + jitter (linear interpolation, BORDER_REFLECT_101; OpenCV 5 computes the
    source coordinates in floating point, older versions rounded them to 1/32 pixel)."""
    b, _, h, w = x.shape
    src = anchor_points(h, w).to(x.device)
    dst = (src[None] + jitter).float().double()  # (B, 3, 2), float32 as the reference's
    ones = torch.ones((b, 3, 1), dtype=x.dtype, device=x.device)
    forward = torch.linalg.solve(torch.cat((src[None].expand(b, 3, 2), ones), dim=2), dst)
    linear, shift = forward[:, :2].transpose(1, 2), forward[:, 2]  # dst = linear @ src + shift
    inverse = torch.linalg.inv(linear)
    inverse_shift = -(inverse @ shift[:, :, None])[:, :, 0]
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[None, :, None]
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, None, :]
    xs = inverse[:, 0, 0, None, None] * cols + inverse[:, 0, 1, None, None] * rows
    ys = inverse[:, 1, 0, None, None] * cols + inverse[:, 1, 1, None, None] * rows
    xs, ys = xs + inverse_shift[:, 0, None, None], ys + inverse_shift[:, 1, None, None]
    return bilinear(x, ys, xs, "reflect101")


def displacement_draws(batch: int, h: int, w: int, generator: torch.Generator,
                       device: torch.device) -> tuple[Tensor, Tensor]:
    """Two (B, H, W) fields uniform in [-1, 1]: the raw column and row displacements."""
    return (uniform((batch, h, w), -1.0, 1.0, generator, device),
            uniform((batch, h, w), -1.0, 1.0, generator, device))


def elastic_from_draws(x: Tensor, params: tuple[float, float, float], jitter: Tensor,
                       raw_dx: Tensor, raw_dy: Tensor) -> Tensor:
    """The elastic transform given its random draws: the affine warp, then every pixel moved by
    the smoothed displacement fields (SciPy's map_coordinates, order 1, "reflect" borders)."""
    scale, smoothing, _ = (p * min(x.shape[-2:]) for p in params)
    warped = affine_warp(x, jitter)
    dx = (gaussian_filter(raw_dx[:, None], smoothing, "symmetric", 3.0) * scale).float()
    dy = (gaussian_filter(raw_dy[:, None], smoothing, "symmetric", 3.0) * scale).float()
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device, dtype=torch.float64)[:, None]
    cols = torch.arange(w, device=x.device, dtype=torch.float64)[None, :]
    ys, xs = rows + dy[:, 0].double(), cols + dx[:, 0].double()
    return bilinear(warped.float().double(), ys, xs, "symmetric").clamp(0, 1) * 255


def elastic_transform(x: Tensor, params: tuple[float, float, float],
                      generator: torch.Generator) -> Tensor:
    """A random affine jitter of the image, then a smooth random displacement of its pixels
    (the parameters are fractions of the image size)."""
    b, _, h, w = x.shape
    jitter = affine_draws(b, params[2] * min(h, w), generator, x.device)
    raw_dx, raw_dy = displacement_draws(b, h, w, generator, x.device)
    return elastic_from_draws(x.float().double(), params, jitter, raw_dx, raw_dy)
