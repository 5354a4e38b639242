"""Row schema of landscape/bits=B/<trial_id>.parquet (torch-free). The columns
(`LANDSCAPE_SCHEMA`) live with the store's other schemas in qgen_sweep/store.py, which the
analysis layer reads them from; this module names the folders and the curves.

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

from qgen_sweep.store import LANDSCAPE_SCHEMA

FOLDER = "landscape"  # <root>/landscape/bits=B/<id>.parquet
FAILURES = "landscape_failures"  # <root>/landscape_failures/<id>-<attempt>.parquet
CURVES = ("surface", "init", "twin")

__all__ = ["CURVES", "FAILURES", "FOLDER", "LANDSCAPE_SCHEMA"]
