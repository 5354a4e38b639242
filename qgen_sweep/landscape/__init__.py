"""Loss landscapes around the kept models (the paper's Figure 2; Li et al. 2018).

For a finished trial: two (or one) random directions in parameter space, filter-normalized
against the kept model, and the training loss and accuracy on a grid of points
theta + a d1 + b d2 around it; the 1D linear interpolations from the initial to the trained
weights and from an FP32 model to its quantized twin; flatness summaries of those curves
(analysis/landscape.sql) and the figures (figures.py).

    settings.py   LandscapeSettings, the grids, the per-configuration direction seed (torch-free)
    schema.py     the row schema of landscape/bits=B/<id>.parquet (torch-free)
    directions.py random filter-normalized directions (torch)
    stacked.py    many parameter sets of one model per forward pass, any architecture (torch)
    surface.py    one trial's surfaces and interpolations -> its Parquet file (torch)
    figures.py    3D surfaces, contours, the side-by-side panel, interpolation curves (matplotlib)
    report.py     the report's landscape sections: flatness table, Kendall, figures

Only directions.py, stacked.py and surface.py import torch; the command and the report import
the rest.
"""
