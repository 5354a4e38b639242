"""The trial engine: one TrialConfig -> a trained model (any registered architecture) and its
metrics.

Knows nothing about Ray or the Parquet layout. Entry points: `train.run_trial` (one trial) and
`bundle.run_bundle` (fused NiN bundles), both driving the one training protocol of
`protocol.py`; `train.load_model` rebuilds a kept model for the post-hoc commands. This package's
__init__ imports no torch; `config.py`, `archs.py`, `inputs.py` and `weights.py` are torch-free so
that the spec, the planner and the launcher's checks can use them.
"""
