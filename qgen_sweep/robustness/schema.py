"""Columns of robustness/bits=B/<trial_id>.parquet: one row per (source, corruption, severity)
of one trial. Torch-free."""

from __future__ import annotations

import pyarrow as pa

_TS = pa.timestamp("us", tz="UTC")

ROBUSTNESS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("sweep", pa.string()),
        ("dataset", pa.string()),
        ("bits", pa.int32()),
        ("source", pa.string()),  # "released" (files) | "generated" (on the fly)
        ("layout", pa.string()),  # "cifar-c" (.npy arrays) | "imagenet-c" (folders) | "generated"
        ("corruption", pa.string()),
        ("severity", pa.int32()),  # 1..5
        ("images", pa.int64()),  # test images evaluated
        ("loss", pa.float64()),  # mean cross-entropy on the corrupted test set (nats)
        ("accuracy", pa.float64()),  # fraction in [0, 1]
        ("gap", pa.float64()),  # loss - clean_train_loss (the paper's gap under distortion)
        ("clean_train_loss", pa.float64()),  # the trial's final row: clean training split
        ("clean_test_loss", pa.float64()),
        ("clean_test_acc", pa.float64()),
        ("seed", pa.int64()),  # generated corruptions' seed (null for files)
        ("data_path", pa.string()),  # the folder files were read from (null when generated)
        ("seconds", pa.float64()),  # loading / generating plus evaluating this set
        ("device", pa.string()),
        ("host", pa.string()),
        ("versions_json", pa.string()),
        ("evaluated_at", _TS),
    ]
)

KEY = ("source", "corruption", "severity")
