"""The single-trial engine: one TrialConfig -> a trained NiN and its metrics.

Knows nothing about Ray or the Parquet layout. Entry point: qgen_sweep.trial.train.run_trial.
This package's __init__ imports no torch; config.py is torch-free so that the spec and the
planner can use it.
"""
