"""Shared pieces of the corruption ops: border modes, separable Gaussian filters, bilinear
sampling, zoom matrices, colour conversions.

Tensors are (B, C, H, W) float64 on the device (float64 like the numpy reference, so that the
final truncation to uint8 flips on the same side of a level as often as possible).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

# ITU-R BT.601 luma weights: OpenCV's RGB2GRAY and libjpeg's Y.
LUMA = (0.299, 0.587, 0.114)


def border_index(index: Tensor, n: int, mode: str) -> Tensor:
    """Map positions outside 0..n-1 back inside, for any distance from the border.

    nearest: a a a | a b c d | d d d (scikit-image / SciPy "nearest")
    reflect101: c b | a b c d | c b (OpenCV's BORDER_REFLECT_101, torch's "reflect")
    symmetric: b a | a b c d | d c (SciPy's "reflect", half-sample symmetric)
    """
    if mode == "nearest" or n == 1:
        return index.clamp(0, n - 1)
    if mode == "reflect101":
        period = 2 * n - 2
        index = index.remainder(period)
        return torch.where(index >= n, period - index, index)
    if mode == "symmetric":
        period = 2 * n
        index = index.remainder(period)
        return torch.where(index >= n, period - 1 - index, index)
    raise ValueError(f"unknown border mode {mode!r}")


def pad(x: Tensor, radius_h: int, radius_w: int, mode: str) -> Tensor:
    """Pad the two spatial dimensions of x (B, C, H, W) by the radii, with `mode` borders."""
    h, w = x.shape[-2:]
    rows = border_index(torch.arange(-radius_h, h + radius_h, device=x.device), h, mode)
    cols = border_index(torch.arange(-radius_w, w + radius_w, device=x.device), w, mode)
    return x.index_select(-2, rows).index_select(-1, cols)


def separable(x: Tensor, kernel_h: Tensor, kernel_w: Tensor, mode: str) -> Tensor:
    """Correlate each channel of x with kernel_h (rows) then kernel_w (columns), odd lengths,
    centred, borders by `mode`."""
    b, c, h, w = x.shape
    rh, rw = kernel_h.numel() // 2, kernel_w.numel() // 2
    flat = pad(x, rh, rw, mode).reshape(b * c, 1, h + 2 * rh, w + 2 * rw)
    kh = kernel_h.to(x).view(1, 1, -1, 1)
    kw = kernel_w.to(x).view(1, 1, 1, -1)
    out = torch.nn.functional.conv2d(torch.nn.functional.conv2d(flat, kh), kw)
    return out.reshape(b, c, h, w)


def gaussian_kernel(sigma: float, truncate: float) -> Tensor:
    """SciPy's 1-D Gaussian filter weights: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 / (float(sigma) ** 2) * offsets**2)
    return torch.from_numpy(weights / weights.sum())


def gaussian_filter(x: Tensor, sigma: float, mode: str = "nearest",
                    truncate: float = 4.0) -> Tensor:
    """scikit-image's `gaussian` (SciPy's gaussian_filter) over the spatial dimensions of each
    channel; sigma <= 1e-15 leaves x as it is, as SciPy does."""
    if sigma <= 1e-15:
        return x
    kernel = gaussian_kernel(sigma, truncate)
    return separable(x, kernel, kernel, mode)


def bilinear(image: Tensor, ys: Tensor, xs: Tensor, mode: str) -> Tensor:
    """Sample image (B, C, H, W) at fractional rows ys and columns xs (B, H', W'), linear
    interpolation between the four neighbours, neighbours outside mapped by `mode`."""
    b, c, h, w = image.shape
    y0, x0 = torch.floor(ys), torch.floor(xs)
    fy, fx = (ys - y0)[:, None], (xs - x0)[:, None]
    y0, x0 = y0.long(), x0.long()
    flat = image.reshape(b, c, h * w)

    def at(rows: Tensor, cols: Tensor) -> Tensor:
        index = border_index(rows, h, mode) * w + border_index(cols, w, mode)  # (B, H', W')
        picked = flat.gather(2, index.reshape(b, 1, -1).expand(b, c, -1))
        return picked.reshape(b, c, *rows.shape[1:])

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bottom * fy


@functools.lru_cache(maxsize=256)
def zoom_matrix(n: int, factor: float) -> np.ndarray:
    """(n, n) matrix of a centred zoom of one axis: crop ceil(n / factor) pixels from the middle,
    resize them by `factor` with SciPy's `zoom(order=1)` (output round(crop * factor), corner
    pixels aligned), keep the middle n pixels."""
    crop = int(np.ceil(n / factor))
    top = (n - crop) // 2
    out = int(round(crop * factor))
    trim = (out - n) // 2
    matrix = np.zeros((n, n))
    step = (crop - 1) / (out - 1) if out > 1 else 0.0
    for row in range(n):
        coordinate = (row + trim) * step
        low = min(int(np.floor(coordinate)), crop - 1)
        frac = coordinate - low
        matrix[row, top + low] += 1 - frac
        if frac > 0 and low + 1 < crop:
            matrix[row, top + low + 1] += frac
    return matrix


def zoom(x: Tensor, factor: float) -> Tensor:
    """Centred zoom of each channel of x (B, C, H, W) by `factor` (>= 1), same size out."""
    return zooms(x, [factor])[0]


def zooms(x: Tensor, factors: list[float]) -> Tensor:
    """(Z, B, C, H, W): x zoomed by each factor, as two batched matrix products."""
    h, w = x.shape[-2:]
    rows = torch.from_numpy(np.stack([zoom_matrix(h, f) for f in factors])).to(x)  # (Z, H, H)
    # (zoom_matrix is cached: the returned arrays are shared, np.stack copies them)
    cols = torch.from_numpy(np.stack([zoom_matrix(w, f) for f in factors])).to(x)  # (Z, W, W)
    across = torch.matmul(x[None], cols.transpose(1, 2)[:, None, None])  # (Z, B, C, H, W)
    return torch.matmul(rows[:, None, None], across)


def to_rgb(x: Tensor) -> Tensor:
    """A grey image (C = 1) as three equal channels; RGB unchanged."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def to_gray(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    weights = torch.tensor(LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def like_input(rgb: Tensor, channels: int) -> Tensor:
    """Back to the input's channel count: a grey image went through an RGB op as R = G = B and
    comes back as its red channel (as `imagecorruptions` does; for brightness R = G = B)."""
    return rgb[:, :1] if channels == 1 else rgb


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """scikit-image's rgb2hsv on (B, 3, H, W) in [0, 1]: where channels tie for the maximum,
    blue wins over green over red; hue and saturation 0 for grey pixels."""
    r, g, b = rgb.unbind(1)
    value = rgb.amax(1)
    delta = value - rgb.amin(1)
    grey = delta == 0
    safe = torch.where(grey, torch.ones_like(delta), delta)
    hue = torch.where(r == value, (g - b) / safe, torch.zeros_like(value))
    hue = torch.where(g == value, 2.0 + (b - r) / safe, hue)
    hue = torch.where(b == value, 4.0 + (r - g) / safe, hue)
    hue = torch.where(grey, torch.zeros_like(hue), (hue / 6.0).remainder(1.0))
    saturation = torch.where(grey, torch.zeros_like(delta),
                             delta / torch.where(value == 0, torch.ones_like(value), value))
    return torch.stack((hue, saturation, value), dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """scikit-image's hsv2rgb on (B, 3, H, W)."""
    h, s, v = hsv.unbind(1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sector = sector.long().remainder(6)
    choices = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    out = torch.zeros_like(hsv)
    for k, (red, green, blue) in enumerate(choices):
        mask = (sector == k)[:, None]
        out = torch.where(mask, torch.stack((red, green, blue), dim=1), out)
    return out


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator,
            device: torch.device) -> Tensor:
    """U(low, high) in float64 from `generator`."""
    draw = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return low + (high - low) * draw


def degrees(x: Tensor) -> Tensor:
    return x * (math.pi / 180.0)
