"""Columns of measures/bits=B/<trial_id>.parquet: one row per measured trial.

Normalised measures carry the names the analysis layer and the paper's Table 3 use
(pacbayes_init, ..., sharpness_mag_orig = sqrt(raw / m)); the raw searches (sigma, sigma_mag,
alpha, alpha_mag) and raw bounds (<name>_raw) are stored too, so the bounds can be recomputed
under another normalisation. Columns of a family not computed (`--only`) are null.
"""

from __future__ import annotations

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")

MEASURE_NAMES = (
    "pacbayes_init",
    "pacbayes_orig",
    "pacbayes_mag_init",
    "pacbayes_mag_orig",
    "sharpness_init",
    "sharpness_orig",
    "sharpness_mag_init",
    "sharpness_mag_orig",
)
FAMILIES = ("pacbayes", "sharpness")
# The searched scale of each search and the family it belongs to.
SEARCHES = {
    "sigma": ("pacbayes", False),
    "sigma_mag": ("pacbayes", True),
    "alpha": ("sharpness", False),
    "alpha_mag": ("sharpness", True),
}


def _search_columns(name: str) -> list[tuple[str, pa.DataType]]:
    return [
        (name, pa.float64()),  # the scale found by bisection
        (f"{name}_drop", pa.float64()),  # accuracy drop measured at that scale
        (f"{name}_iterations", pa.int32()),  # bisection steps taken
        (f"{name}_converged", pa.bool_()),  # drop within tolerance of the target
    ]


MEASURE_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("sweep", pa.string()),
        ("dataset", pa.string()),
        ("bits", pa.int32()),
        ("families", pa.string()),  # computed families, comma-separated: "pacbayes,sharpness"
        ("m", pa.int64()),  # training examples
        ("omega", pa.int64()),  # conv weights (length of w)
        ("acc0", pa.float64()),  # training accuracy of the folded plain network, eval mode
        ("l2_norm", pa.float64()),  # ||w|| of the folded trained conv weights
        ("l2_norm_unfolded", pa.float64()),  # ||w|| before BN folding (paper Table 2 convention)
        ("dist_init", pa.float64()),  # ||w - w0|| (folded)
        *[col for name in SEARCHES for col in _search_columns(name)],
        *[(f"{name}_raw", pa.float64()) for name in MEASURE_NAMES],
        *[(name, pa.float64()) for name in MEASURE_NAMES],
        ("pacbayes_flatness", pa.float64()),  # 1 / sigma^2
        ("pacbayes_mag_flatness", pa.float64()),  # 1 / sigma'^2
        ("sharpness_flatness", pa.float64()),  # 1 / alpha^2
        ("sharpness_mag_flatness", pa.float64()),  # 1 / alpha'^2
        # Settings, so every value can be traced and recomputed.
        ("noise", pa.string()),  # "reference" | "jiang"
        ("bn_affine", pa.string()),  # "perturb" | "fixed": are the folded biases perturbed
        ("seed", pa.int64()),
        ("iterations", pa.int32()),
        ("target_drop", pa.float64()),
        ("tolerance", pa.float64()),
        ("mc_samples", pa.int32()),
        ("restarts", pa.int32()),
        ("ascent_steps", pa.int32()),
        ("ascent_lr", pa.float64()),
        ("ascent_batch_size", pa.int32()),
        ("magnitude_eps", pa.float64()),
        ("delta", pa.float64()),
        ("settings_json", pa.string()),
        # Cost and provenance.
        ("train_passes", pa.float64()),  # examples forwarded / m, over all copies and searches
        ("seconds", pa.float64()),
        ("device", pa.string()),
        ("host", pa.string()),
        ("versions_json", pa.string()),
        ("measured_at", _TS),
    ]
)
