"""Blur corruptions: defocus (disk kernel), glass (blur + local pixel shuffle), motion, zoom,
Gaussian. x (B, C, H, W) float64 in [0, 1] -> pixel values in [0, 255].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from qgen_sweep.robustness.ops.common import (
    border_index,
    degrees,
    gaussian_filter,
    pad,
    separable,
    uniform,
    zooms,
)


def _cv_gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """OpenCV's getGaussianKernel(size, sigma > 0) in float32."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) * 0.5
    weights = np.exp(-0.5 / sigma**2 * offsets**2)
    return (weights / weights.sum()).astype(np.float32)


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The defocus kernel: a normalised disk of `radius` on a 17 x 17 grid (wider for radius
    > 8), anti-aliased by OpenCV's GaussianBlur (3 x 3, or 5 x 5 for the wider grid; borders
    reflected as BORDER_REFLECT_101)."""
    half, size = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    blur = torch.from_numpy(_cv_gaussian_1d(size, alias_blur)).double()
    image = torch.from_numpy(disk).double()[None, None]
    kernel = separable(image, blur, blur, "reflect101")[0, 0].float().double()
    # Keep the centred square that holds every non-zero weight: the zeros around a small disk
    # add nothing but time (radius 1.5 fills 5 x 5 of the 17 x 17 grid).
    nonzero = kernel.nonzero()
    reach = int((nonzero - half).abs().max()) if nonzero.numel() else 0
    return kernel[half - reach:half + reach + 1, half - reach:half + reach + 1]


def defocus_blur(x: Tensor, params: tuple[float, float], generator: torch.Generator) -> Tensor:
    """OpenCV's filter2D of each channel with the disk kernel (borders BORDER_REFLECT_101)."""
    kernel = disk_kernel(*params).to(x)
    b, c, h, w = x.shape
    r = kernel.shape[0] // 2
    flat = pad(x, r, r, "reflect101").reshape(b * c, 1, h + 2 * r, w + 2 * r)
    out = torch.nn.functional.conv2d(flat, kernel[None, None])
    return out.reshape(b, c, h, w).clamp(0, 1) * 255


def shuffle_offsets(shape: tuple[int, int, int], delta: int, iterations: int,
                    generator: torch.Generator, device: torch.device) -> Tensor:
    """(iterations, steps, B, 2) pixel offsets (dx, dy) in [-delta, delta) for the glass blur,
    one pair per visited pixel and image, in the order the shuffle visits them."""
    b, h, w = shape
    steps = len(range(h - delta, delta, -1)) * len(range(w - delta, delta, -1))
    return torch.randint(-delta, delta, (iterations, steps, b, 2), generator=generator,
                         device=device)


def glass_shuffle(x: Tensor, delta: int, offsets: Tensor) -> Tensor:
    """Swap each visited pixel (bottom-right to top-left, `delta` from the border) with the
    pixel at its offset, one image of the batch per row of `offsets`, sequentially."""
    b, c, h, w = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, c).clone()  # (B, H W, C)
    batch = torch.arange(b, device=x.device)
    for round_offsets in offsets:
        others = round_offsets[:, :, 1] * w + round_offsets[:, :, 0]  # (steps, B) flat offsets
        step = 0
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                here = row * w + col
                other = here + others[step]
                kept = pixels[:, here].clone()
                pixels[:, here] = pixels[batch, other]
                pixels[batch, other] = kept
                step += 1
    return pixels.reshape(b, h, w, c).permute(0, 3, 1, 2)


def glass_blur(x: Tensor, params: tuple[float, int, int], generator: torch.Generator,
               offsets: Tensor | None = None) -> Tensor:
    """Gaussian blur, truncated to uint8, pixels shuffled locally `iterations` times, blurred
    again. `offsets` (from shuffle_offsets) fixes the random shuffle, for tests."""
    sigma, delta, iterations = params
    blurred = torch.floor(gaussian_filter(x, sigma) * 255)
    if offsets is None:
        offsets = shuffle_offsets((x.shape[0], *x.shape[-2:]), delta, iterations, generator,
                                  x.device)
    shuffled = glass_shuffle(blurred, delta, offsets) / 255
    return gaussian_filter(shuffled, sigma).clamp(0, 1) * 255


def motion_kernel(radius: int, sigma: float) -> Tensor:
    """Weights of the 2 radius + 1 shifted copies: a half Gaussian, normalised."""
    steps = np.arange(2 * radius + 1, dtype=np.float64)
    weights = np.exp(-(steps**2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    return torch.from_numpy(weights / weights.sum())


def motion(x: Tensor, radius: int, sigma: float, angle: Tensor) -> Tensor:
    """Motion blur along `angle` (degrees, one per image): the weighted sum of copies shifted by
    up to 2 radius + 1 pixels along the angle, edges repeated; a copy whose shift leaves the
    image ends the sum for that image (the numpy reimplementation of ImageMagick's motion blur
    in the `imagecorruptions` package)."""
    b, c, h, w = x.shape
    width = 2 * radius + 1
    weights = motion_kernel(radius, sigma).to(x)
    rad = degrees(angle.to(x))
    point_y, point_x = width * torch.sin(rad), width * torch.cos(rad)
    hypot = torch.hypot(point_y, point_x)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    flat = x.reshape(b, c, h * w)
    alive = torch.ones(b, dtype=torch.bool, device=x.device)
    out = torch.zeros_like(x)
    for i in range(width):
        dy = -torch.ceil(i * point_y / hypot - 0.5).long()
        dx = -torch.ceil(i * point_x / hypot - 0.5).long()
        alive &= (dy.abs() < h) & (dx.abs() < w)
        src_rows = border_index(rows[None] - dy[:, None], h, "nearest")  # (B, H)
        src_cols = border_index(cols[None] - dx[:, None], w, "nearest")  # (B, W)
        index = (src_rows[:, :, None] * w + src_cols[:, None, :]).reshape(b, 1, h * w)
        shifted = flat.gather(2, index.expand(b, c, h * w)).reshape(b, c, h, w)
        out += (weights[i] * alive.to(x))[:, None, None, None] * shifted
    return out


def motion_blur(x: Tensor, params: tuple[int, float], generator: torch.Generator,
                angle: Tensor | None = None) -> Tensor:
    """Motion blur with a uniform random angle in [-45, 45] degrees per image."""
    if angle is None:
        angle = uniform((x.shape[0],), -45.0, 45.0, generator, x.device)
    return motion(x * 255, params[0], params[1], angle).clamp(0, 255)


def zoom_factors(stop: float, step: float) -> list[float]:
    """numpy.arange(1, stop, step), exactly as the reference computes them."""
    return [float(z) for z in np.arange(1, stop, step)]


def zoom_blur(x: Tensor, params: tuple[float, float], generator: torch.Generator) -> Tensor:
    """The mean of the image and its centred zooms by each factor (float32, as the reference)."""
    x32 = x.float()
    factors = zoom_factors(*params)
    total = torch.zeros_like(x32)
    for chunk in range(0, len(factors), 8):  # 8 zooms at a time bounds the memory
        for zoomed in zooms(x32.double(), factors[chunk:chunk + 8]).float():
            total += zoomed  # in factor order, float32, as the reference sums
    return ((x32 + total) / (len(factors) + 1)).double().clamp(0, 1) * 255


def gaussian_blur(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """scikit-image's gaussian(sigma) per channel (borders "nearest", truncated at 4 sigma)."""
    return gaussian_filter(x, sigma).clamp(0, 1) * 255

