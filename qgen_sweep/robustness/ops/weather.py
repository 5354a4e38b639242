"""Weather corruptions: snow, frost, fog. x (B, C, H, W) float64 in [0, 1] -> [0, 255]."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from qgen_sweep.errors import QGenError
from qgen_sweep.robustness.ops.blur import motion
from qgen_sweep.robustness.ops.common import to_gray, uniform, zoom

# --------------------------------------------------------------------------------------- snow


def snow(x: Tensor, params: tuple, generator: torch.Generator) -> Tensor:
    """Snow flakes: a thresholded, zoomed Gaussian field, motion-blurred along a random angle in
    [-135, -45] degrees, added twice (upright and rotated by 180 degrees) to a paler image."""
    mean, std, factor, threshold, radius, sigma, keep = params
    b, c, h, w = x.shape
    flakes = mean + std * torch.randn((b, 1, h, w), generator=generator, device=x.device,
                                      dtype=x.dtype)
    flakes = zoom(flakes, factor)
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes)
    flakes = torch.floor(flakes.clamp(0, 1) * 255)  # an 8-bit picture, as the reference's PNG
    angle = uniform((b,), -135.0, -45.0, generator, x.device)
    flakes = torch.round(motion(flakes, radius, sigma, angle).clamp(0, 255)) / 255
    gray = x if c == 1 else to_gray(x)
    paler = keep * x + (1 - keep) * torch.maximum(x, gray * 1.5 + 0.5)
    return (paler + flakes + flakes.flip(-1, -2)).clamp(0, 1) * 255


# -------------------------------------------------------------------------------------- frost
FROST_PICTURES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
FROST_SCALE_STEP = 5  # the pictures are scaled by 0.2: OpenCV's linear resize then samples
FROST_SCALE_OFFSET = 2  # source pixel 5 i + 2 for output pixel i (exactly, no interpolation)


def frost_folder() -> Path:
    """The frost pictures of the benchmark, as shipped by the `imagecorruptions` package (found
    without importing it: its import needs packages that this project does not)."""
    spec = importlib.util.find_spec("imagecorruptions")
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "frost"
    if folder is None or not all((folder / name).is_file() for name in FROST_PICTURES):
        raise QGenError("frost needs the frost pictures of the `imagecorruptions` package: "
                        "pip install imagecorruptions, or leave frost out of --corruptions")
    return folder


@functools.lru_cache(maxsize=2)
def _frost_pictures(device: str) -> tuple[Tensor, ...]:
    from PIL import Image

    pictures = []
    for name in FROST_PICTURES:
        with Image.open(frost_folder() / name) as picture:
            rgb = np.asarray(picture.convert("RGB"), dtype=np.float64)
        small = rgb[FROST_SCALE_OFFSET::FROST_SCALE_STEP, FROST_SCALE_OFFSET::FROST_SCALE_STEP]
        pictures.append(torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1))))
    return tuple(p.to(device) for p in pictures)


def frost_layer(pictures: tuple[Tensor, ...], which: Tensor, top: Tensor, left: Tensor,
                size: tuple[int, int]) -> Tensor:
    """(B, 3, H, W) crops: picture which[i] from (top[i], left[i]), pixel values 0..255."""
    h, w = size
    out = torch.empty((which.numel(), 3, h, w), dtype=torch.float64, device=which.device)
    for k, picture in enumerate(pictures):
        members = (which == k).nonzero().flatten()
        if members.numel() == 0:
            continue
        rows = (top[members, None] + torch.arange(h, device=which.device))[:, :, None]
        cols = (left[members, None] + torch.arange(w, device=which.device))[:, None, :]
        out[members] = picture[:, rows, cols].permute(1, 0, 2, 3).to(out)
    return out


def frost(x: Tensor, params: tuple[float, float], generator: torch.Generator) -> Tensor:
    """A random crop of one of five frost pictures (scaled by 0.2) blended over the image."""
    b, _, h, w = x.shape
    pictures = _frost_pictures(str(x.device))
    which = torch.randint(0, len(pictures), (b,), generator=generator, device=x.device)
    heights = torch.tensor([p.shape[1] for p in pictures], device=x.device)[which]
    widths = torch.tensor([p.shape[2] for p in pictures], device=x.device)[which]
    top = (torch.rand(b, generator=generator, device=x.device, dtype=torch.float64)
           * (heights - h)).long()  # uniform in [0, height - H), as numpy's randint
    left = (torch.rand(b, generator=generator, device=x.device, dtype=torch.float64)
            * (widths - w)).long()
    return frost_blend(x, frost_layer(pictures, which, top, left, (h, w)), params)


def frost_blend(x: Tensor, layer: Tensor, params: tuple[float, float]) -> Tensor:
    """keep x + amount frost on 8-bit levels (a grey image gets the crop's grey, with the
    weights `imagecorruptions` uses)."""
    keep, amount = params
    if x.shape[1] == 1:
        weights = torch.tensor((0.2989, 0.5870, 0.1140), dtype=x.dtype, device=x.device)
        layer = (layer * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
    return (keep * torch.round(x * 255) + amount * layer).clamp(0, 255)


# ---------------------------------------------------------------------------------------- fog


def plasma_fractal(batch: int, size: int, decay: float, generator: torch.Generator,
                   device: torch.device) -> Tensor:
    """(B, size, size) diamond-square height maps in [0, 1] (size a power of two): corners, then
    square and diamond centres at each halving step, each the mean of its neighbours plus
    uniform noise of amplitude wibble^2 (wibble from 100, divided by `decay` per step)."""
    grid = torch.zeros((batch, size, size), dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def noisy_mean(total: Tensor) -> Tensor:
        return total / 4 + wibble * uniform(total.shape, -wibble, wibble, generator, device)

    while step >= 2:
        half = step // 2
        corners = grid[:, 0::step, 0::step]
        total = corners + corners.roll(-1, dims=1)
        total = total + total.roll(-1, dims=2)
        grid[:, half::step, half::step] = noisy_mean(total)
        centres, corners = grid[:, half::step, half::step], grid[:, 0::step, 0::step]
        left = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        grid[:, 0::step, half::step] = noisy_mean(left)
        top = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        grid[:, half::step, 0::step] = noisy_mean(top)
        step, wibble = half, wibble / decay
    flat = grid.reshape(batch, -1)
    flat = flat - flat.amin(1, keepdim=True)
    return (flat / flat.amax(1, keepdim=True)).reshape(batch, size, size)


def fog(x: Tensor, params: tuple[float, float], generator: torch.Generator) -> Tensor:
    """A plasma fractal added to the image, then the image rescaled by max / (max + strength)
    (the map is as large as the next power of two of the image side: 32 for CIFAR)."""
    strength, decay = params
    b, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()
    fractal = plasma_fractal(b, size, decay, generator, x.device)[:, None, :h, :w]
    peak = x.reshape(b, -1).amax(1).view(b, 1, 1, 1)
    return ((x + strength * fractal) * peak / (peak + strength)).clamp(0, 1) * 255

