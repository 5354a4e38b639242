"""Row schema of landscape/bits=B/<trial_id>.parquet (torch-free: the store and the analysis
layer read it).

One file per trial holds every curve computed for it: one row per evaluated point. `kind` says
which curve a row belongs to:

    surface  random filter-normalized directions: theta + a d1 + b d2 (b = 0 and j = 0 when 1D)
    init     linear interpolation (1 - a) theta_init + a theta (b = 0): a = 0 is the model at
             initialisation, a = 1 the kept model
    twin     linear interpolation from the FP32 twin (a = 0) to this quantized model (a = 1),
             evaluated in the FP32 architecture with this model's dequantized weights (b = 0)

`landscape_id` names the settings the rows were computed with (LandscapeSettings.key()), so
surfaces with other settings can sit beside them in the same file. `i` and `j` are the grid
offsets of (a, b) in grid steps (0 at the trained model for surfaces; a = i / n for the
interpolations), so the SQL finds the centre and its neighbours without comparing floats.
"""

from __future__ import annotations

import pyarrow as pa

FOLDER = "landscape"  # <root>/landscape/bits=B/<id>.parquet
FAILURES = "landscape_failures"  # <root>/landscape_failures/<id>-<attempt>.parquet
CURVES = ("surface", "init", "twin")

_TS = pa.timestamp("us", tz="UTC")

LANDSCAPE_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("sweep", pa.string()),
        ("dataset", pa.string()),
        ("bits", pa.int32()),
        ("landscape_id", pa.string()),  # LandscapeSettings.key()
        ("kind", pa.string()),  # one of CURVES
        ("dims", pa.int32()),  # 1 or 2: directions of the surface
        ("grid", pa.int32()),  # points per axis (odd)
        ("span", pa.float64()),  # a, b in [-span, span] (units of the filter norms)
        ("seed", pa.int64()),  # --seed
        ("ignore", pa.string()),  # which 1-D parameters get a zero direction ("biasbn" | "bn")
        ("direction_seed", pa.int64()),  # derived per configuration: the same for every precision
        ("twin_id", pa.string()),  # FP32 twin's trial id (every kind, null for FP32 trials)
        ("i", pa.int32()),  # grid offset of a (steps)
        ("j", pa.int32()),  # grid offset of b (steps)
        ("a", pa.float64()),
        ("b", pa.float64()),
        ("loss", pa.float64()),  # mean cross-entropy over the full training split, nats
        ("accuracy", pa.float64()),  # training accuracy, fraction in [0, 1]
        ("examples", pa.int64()),  # training examples the loss and accuracy average over
        ("evaluator", pa.string()),  # "stacked" (several points per forward) | "loop"
        ("points_per_pass", pa.int32()),
        ("seconds", pa.float64()),  # wall time of this curve
        ("device", pa.string()),
        ("host", pa.string()),
        ("versions_json", pa.string()),
        ("computed_at", _TS),
    ]
)
