"""Reference (numpy) corruptions for the tests of qgen_sweep.robustness.ops.

Built from the libraries the CIFAR-C images were made with (scikit-image, SciPy, OpenCV,
Pillow) and from the `imagecorruptions` package (its disk kernel, motion blur, plasma fractal
and frost pictures), with CIFAR-C's parameters, one image (H, W, C) uint8 at a time. Each returns
values in [0, 255] like the reference functions; `np.uint8(...)` of it is what the released files
hold.

`imagecorruptions` 1.1.2 predates numpy 2 (np.float_), scikit-image 0.19 (gaussian's
`multichannel`) and setuptools without pkg_resources; `load_imagecorruptions` supplies those three
names before importing it, and changes nothing else.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import sys
import types

import numpy as np

CIFAR_SIZE = 32


def load_imagecorruptions():
    """The `imagecorruptions.corruptions` module, importable under today's numpy and
    scikit-image (see the module docstring)."""
    import skimage.filters

    if "pkg_resources" not in sys.modules:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            return str(importlib.resources.files(package).joinpath(name))

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    gaussian = skimage.filters.gaussian
    if not getattr(gaussian, "_accepts_multichannel", False):
        def compatible(image, *args, multichannel=None, **kwargs):
            if multichannel:
                kwargs.setdefault("channel_axis", -1)
            return gaussian(image, *args, **kwargs)

        compatible._accepts_multichannel = True
        skimage.filters.gaussian = compatible
    import imagecorruptions.corruptions as corruptions

    return corruptions


def sample_images(count: int = 48, size: int = CIFAR_SIZE) -> np.ndarray:
    """(count, size, size, 3) uint8 natural images: tiles of scikit-image's bundled photographs,
    scaled down so a tile holds an object's worth of detail, as a CIFAR image does."""
    import skimage.data
    from PIL import Image

    tiles = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        photo = Image.fromarray(getattr(skimage.data, name)())
        small = np.asarray(photo.resize((photo.width // 4, photo.height // 4), Image.BOX))
        for top in range(0, small.shape[0] - size + 1, size):
            for left in range(0, small.shape[1] - size + 1, size):
                tiles.append(small[top:top + size, left:left + size])
    return np.stack(tiles[:count])


def gaussian(image: np.ndarray, sigma: float, **kwargs) -> np.ndarray:
    from skimage.filters import gaussian as skimage_gaussian

    return skimage_gaussian(image, sigma=sigma, channel_axis=-1 if image.ndim == 3 else None,
                            **kwargs)


def defocus_blur(x: np.ndarray, params) -> np.ndarray:
    import cv2

    kernel = load_imagecorruptions().disk(radius=params[0], alias_blur=params[1])
    image = x / 255.0
    channels = [cv2.filter2D(image[:, :, d], -1, kernel) for d in range(image.shape[2])]
    return np.clip(np.stack(channels, axis=2), 0, 1) * 255


def glass_blur(x: np.ndarray, params, offsets: np.ndarray) -> np.ndarray:
    """offsets (iterations, steps, 2): the (dx, dy) the shuffle draws, in visiting order."""
    sigma, delta, iterations = params
    image = np.uint8(gaussian(x / 255.0, sigma) * 255)
    h, w = image.shape[:2]
    for i in range(iterations):
        step = 0
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = offsets[i, step]
                other = (row + dy, col + dx)
                image[row, col], image[other] = image[other], image[row, col].copy()
                step += 1
    return np.clip(gaussian(image / 255.0, sigma), 0, 1) * 255


def motion_blur(x: np.ndarray, params, angle: float) -> np.ndarray:
    blurred = load_imagecorruptions()._motion_blur(x, radius=params[0], sigma=params[1],
                                                   angle=angle)
    return np.clip(blurred, 0, 255)


def clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Centre crop of ceil(h / factor), SciPy zoom(order=1), centre trim back to h."""
    from scipy.ndimage import zoom

    h = image.shape[0]
    crop = int(np.ceil(h / factor))
    top = (h - crop) // 2
    zoomed = zoom(image[top:top + crop, top:top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim:trim + h, trim:trim + h]


def zoom_blur(x: np.ndarray, params) -> np.ndarray:
    factors = np.arange(1, params[0], params[1])
    image = (x / 255.0).astype(np.float32)
    total = np.zeros_like(image)
    for factor in factors:
        total += clipped_zoom(image, factor)
    return np.clip((image + total) / (len(factors) + 1), 0, 1) * 255


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.clip(gaussian(x / 255.0, sigma), 0, 1) * 255


def snow(x: np.ndarray, params, rng: np.random.Generator) -> np.ndarray:
    import cv2

    mean, std, factor, threshold, radius, sigma, keep = params
    image = x.astype(np.float32) / 255.0
    flakes = rng.normal(size=image.shape[:2], loc=mean, scale=std)
    flakes = clipped_zoom(flakes[..., None], factor)
    flakes[flakes < threshold] = 0
    flakes = (np.clip(flakes.squeeze(), 0, 1) * 255).astype(np.uint8)
    blurred = load_imagecorruptions()._motion_blur(flakes, radius=radius, sigma=sigma,
                                                   angle=rng.uniform(-135, -45))
    flakes = (np.round(np.clip(blurred, 0, 255)).astype(np.uint8) / 255.0)[..., None]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
    image = keep * image + (1 - keep) * np.maximum(image, gray * 1.5 + 0.5)
    return np.clip(image + flakes + np.rot90(flakes, k=2), 0, 1) * 255


@functools.lru_cache(maxsize=1)
def frost_pictures() -> list[np.ndarray]:
    """The five frost pictures the benchmark draws from, scaled by 0.2 with OpenCV, RGB."""
    import cv2

    load_imagecorruptions()  # importing the package needs the shims
    folder = importlib.resources.files("imagecorruptions").joinpath("frost")
    names = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
    out = []
    for name in names:
        picture = cv2.imread(str(folder.joinpath(name)))
        out.append(cv2.resize(picture, (0, 0), fx=0.2, fy=0.2)[..., [2, 1, 0]])
    return out


def frost(x: np.ndarray, params, which: int, top: int, left: int) -> np.ndarray:
    h, w = x.shape[:2]
    layer = frost_pictures()[which][top:top + h, left:left + w]
    return np.clip(params[0] * x + params[1] * layer, 0, 255)


def fog(x: np.ndarray, params) -> np.ndarray:
    image = x / 255.0
    peak = image.max()
    fractal = load_imagecorruptions().plasma_fractal(mapsize=32, wibbledecay=params[1])
    image = image + params[0] * fractal[:32, :32][..., None]
    return np.clip(image * peak / (peak + params[0]), 0, 1) * 255


def brightness(x: np.ndarray, amount: float) -> np.ndarray:
    import skimage.color

    hsv = skimage.color.rgb2hsv(x / 255.0)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + amount, 0, 1)
    return np.clip(skimage.color.hsv2rgb(hsv), 0, 1) * 255


def saturate(x: np.ndarray, params) -> np.ndarray:
    import skimage.color

    hsv = skimage.color.rgb2hsv(x / 255.0)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] * params[0] + params[1], 0, 1)
    return np.clip(skimage.color.hsv2rgb(hsv), 0, 1) * 255


def contrast(x: np.ndarray, factor: float) -> np.ndarray:
    image = x / 255.0
    mean = image.mean(axis=(0, 1), keepdims=True)
    return np.clip((image - mean) * factor + mean, 0, 1) * 255


def elastic_transform(x: np.ndarray, params, jitter: np.ndarray, raw_dx: np.ndarray,
                      raw_dy: np.ndarray) -> np.ndarray:
    """Given the draws: jitter (3, 2) of the anchor points, raw displacement fields (H, W)."""
    import cv2
    from scipy.ndimage import map_coordinates

    scale, smoothing, _ = (p * CIFAR_SIZE for p in params)
    image = x.astype(np.float32) / 255.0
    size = image.shape[:2]
    centre = np.float32(size) // 2
    side = min(size) // 3
    src = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    dst = src + jitter.astype(np.float32)
    matrix = cv2.getAffineTransform(src, dst)
    image = cv2.warpAffine(image, matrix, size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian(raw_dx, smoothing, mode="reflect", truncate=3) * scale).astype(np.float32)
    dy = (gaussian(raw_dy, smoothing, mode="reflect", truncate=3) * scale).astype(np.float32)
    xx, yy, zz = np.meshgrid(np.arange(size[1]), np.arange(size[0]), np.arange(image.shape[2]))
    indices = (np.reshape(yy + dy[..., None], (-1, 1)), np.reshape(xx + dx[..., None], (-1, 1)),
               np.reshape(zz, (-1, 1)))
    out = map_coordinates(image, indices, order=1, mode="reflect").reshape(image.shape)
    return np.clip(out, 0, 1) * 255


def pixelate(x: np.ndarray, factor: float) -> np.ndarray:
    from PIL import Image

    picture = Image.fromarray(x)
    h, w = x.shape[:2]
    small = picture.resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX), dtype=np.float64)


def jpeg_compression(x: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    mode = "L" if x.ndim == 2 or x.shape[2] == 1 else "RGB"
    Image.fromarray(x.squeeze() if mode == "L" else x, mode=mode).save(buffer, "JPEG",
                                                                      quality=quality)
    decoded = np.asarray(Image.open(buffer), dtype=np.float64)
    return decoded[..., None] if mode == "L" else decoded




def _noise(name: str, x: np.ndarray, c, rng: np.random.Generator) -> np.ndarray:
    from skimage.util import random_noise

    x = x / 255.0
    if name == "gaussian_noise":
        out = x + rng.normal(size=x.shape, scale=c)
    elif name == "shot_noise":
        out = rng.poisson(x * c) / c
    elif name == "impulse_noise":
        out = random_noise(x, mode="s&p", amount=c, rng=rng)
    else:
        out = x + x * rng.normal(size=x.shape, scale=c)
    return np.clip(out, 0, 1) * 255


def corrupt_one(name: str, x: np.ndarray, params, rng: np.random.Generator) -> np.ndarray:
    """Any generated corruption of one (32, 32, 3) uint8 image, the reference way, its random
    draws from `rng` (numpy's global generator for the imagecorruptions fractal): uint8."""
    if name in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"):
        return np.uint8(_noise(name, x, params, rng))
    deterministic = {"defocus_blur": defocus_blur, "zoom_blur": zoom_blur,
                     "gaussian_blur": gaussian_blur, "brightness": brightness,
                     "saturate": saturate, "contrast": contrast, "pixelate": pixelate,
                     "jpeg_compression": jpeg_compression, "fog": fog}
    if name in deterministic:
        return np.uint8(deterministic[name](x, params))
    h, w = x.shape[:2]
    if name == "glass_blur":
        steps = len(range(h - params[1], params[1], -1)) * len(range(w - params[1], params[1], -1))
        offsets = rng.integers(-params[1], params[1], (params[2], steps, 2))
        return np.uint8(glass_blur(x, params, offsets))
    if name == "motion_blur":
        return np.uint8(motion_blur(x, params, rng.uniform(-45, 45)))
    if name == "snow":
        return np.uint8(snow(x, params, rng))
    if name == "frost":
        which = int(rng.integers(5))
        picture = frost_pictures()[which]
        top = int(rng.integers(0, picture.shape[0] - h))
        left = int(rng.integers(0, picture.shape[1] - w))
        return np.uint8(frost(x, params, which, top, left))
    if name == "elastic_transform":
        jitter = rng.uniform(-params[2] * CIFAR_SIZE, params[2] * CIFAR_SIZE, (3, 2))
        raw_dx, raw_dy = rng.uniform(-1, 1, (h, w)), rng.uniform(-1, 1, (h, w))
        return np.uint8(elastic_transform(x, params, jitter, raw_dx, raw_dy))
    raise ValueError(f"no reference for {name}")
