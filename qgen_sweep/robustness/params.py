"""The corruptions of Hendrycks & Dietterich (2019) and CIFAR-10-C's parameters per severity.

Torch-free (the CLI validates names with it). Severity s in 1..5 takes entry s - 1 of each list.
The numbers are those CIFAR-10-C and CIFAR-100-C were generated with (32 x 32 images; the
ImageNet-C parameters differ); units: pixel values in [0, 1] unless said otherwise, lengths in
pixels.
"""

from __future__ import annotations

# The 15 corruptions of the benchmark, in the paper's order (noise, blur, weather, digital).
COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
          "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
          "elastic_transform", "pixelate", "jpeg_compression")
# The 4 held-out ("validation") corruptions that the released CIFAR-C files also hold.
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = COMMON + EXTRA
GROUPS = {"common": COMMON, "extra": EXTRA, "all": ALL}
SEVERITIES = (1, 2, 3, 4, 5)

# Spatter needs OpenCV's Canny edges, distance transform and histogram equalisation of a liquid
# mask: an image-processing pipeline with no faithful batched tensor form. It is read from the
# released files only.
NOT_GENERATED = {"spatter": "needs OpenCV's Canny edges, distance transform and histogram "
                            "equalisation (no batched tensor form); read it with --source "
                            "released"}
GENERATED = tuple(name for name in ALL if name not in NOT_GENERATED)

CIFAR: dict[str, tuple] = {
    # noise
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of additive N(0, c^2)
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity: Poisson(x c) / c
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of salt-and-pepper values
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),  # std of multiplicative x (1 + N(0, c^2))
    # blur: (radius, anti-alias sigma) of the disk kernel
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    # (sigma, max pixel shift, shuffle iterations)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    # (radius, sigma) of the motion kernel; the angle is uniform in [-45, 45] degrees
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    # zoom factors numpy.arange(1, stop, step): the image is averaged over these zooms
    "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma
    # weather: (mean, std, zoom, threshold, blur radius, blur sigma, image weight) of the snow
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    # (image weight, frost weight); frost pictures scaled by 0.2, one of the first five
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    # (fog strength, wibble decay of the plasma fractal)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    # (liquid mean, std, blur sigma, threshold, strength, mud?): released files only
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    # digital
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from the channel mean
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # HSV s -> s a + b
    # (displacement scale, displacement smoothing sigma, affine jitter) as fractions of the
    # image size (32 pixels for CIFAR)
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                          (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # box-filter down to c x size, then back up
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
}


def parse_corruptions(text: str | None, generated: bool) -> tuple[str, ...]:
    """--corruptions: names and groups (common, extra, all), comma-separated; default common.
    Raises ValueError with the rule, the bad value and the way out."""
    if not text or not text.strip():
        return COMMON
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item not in GROUPS and item not in ALL:
            raise ValueError(f"--corruptions takes names from {', '.join(ALL)} or the groups "
                             f"{', '.join(GROUPS)}, but got {item!r}")
        names.extend(GROUPS.get(item, (item,)))
    names = list(dict.fromkeys(names))
    if generated:
        group_asked = any(part.strip() in GROUPS for part in text.split(","))
        missing = [n for n in names if n in NOT_GENERATED]
        if missing and not group_asked:
            raise ValueError(f"--source generated cannot make {missing[0]}: "
                             f"{NOT_GENERATED[missing[0]]}")
        names = [n for n in names if n not in NOT_GENERATED]
    return tuple(names)


def parse_severities(text: str | None) -> tuple[int, ...]:
    """--severities: "1-5", "3", "1,3,5" (default all five). Raises ValueError."""
    if not text or not text.strip():
        return SEVERITIES
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            low, _, high = part.partition("-")
            out.extend(range(int(low), int(high or low) + 1))
    except ValueError:
        out = [0]
    if not out or any(s not in SEVERITIES for s in out):
        raise ValueError(f"--severities takes severities 1 to 5 as a range or list (e.g. 1-5 or "
                         f"1,3,5), but got {text!r}")
    return tuple(sorted(set(out)))
