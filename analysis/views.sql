-- Named views over a results directory: one sweep's store, or a folder of sweep stores.
--
-- How this file is run (qgen_sweep/analysis/db.py, `connect(results_dir)`):
--   1. Python finds the stores under the results directory (a folder with plan.parquet, sweep.toml
--      or a trials/ epochs/ failures/ measures/ folder; or a folder whose sub-folders are such
--      stores) and loads each kind's Parquet files into an in-memory table raw_<kind>:
--        raw_plan      <store>/plan.parquet                (PLAN_SCHEMA in qgen_sweep/store.py)
--        raw_trials    <store>/trials/bits=*/*.parquet     (TRIAL_SCHEMA)
--        raw_epochs    <store>/epochs/bits=*/*.parquet     (EPOCH_SCHEMA)
--        raw_failures  <store>/failures/*.parquet          (FAILURE_SCHEMA)
--        raw_measures  <store>/measures/bits=*/*.parquet   (the columns the measures files hold)
--        raw_robustness <store>/robustness/bits=*/*.parquet (qgen_sweep/robustness/schema.py)
--      Every raw_<kind> starts with a `sweep` VARCHAR column: the store's sweep name (from
--      plan.parquet, else from its trial rows, else the folder name), so sweeps sit side by side.
--      raw_stores has one row per store: sweep (its label), name (the sweep's own name), path
--      (absolute) and spec_hash (from its sweep.toml; NULL without one). The label is the sweep
--      name, or <name>@<folder> when several stores of the results directory share that name
--      (replicates of one sweep are never merged: their trial ids are the same).
--      raw_started has one row per started trial (sweep, trial_id, running: whether a launch
--      or resume holds that store's lock now), from the checkpoints/<id>/attempts.json files.
--      A kind with no files is an empty table with its schema's columns; raw_measures (raw_robustness)
--      exists only when some store has measures (robustness) files. Files that do not read back (truncated by hand) are
--      skipped with a warning, as ResultsStore does. Hive partitioning is off: `bits` comes from
--      inside each file.
--   2. File access is then switched off (enable_external_access = false, configuration locked).
--      So this file and every analysis/measures*.sql select from raw_<kind> tables and never read
--      files: a read_parquet() here fails with a Permission Error. (This is what keeps
--      `qgen-sweep query` read-only.)
--   3. Python defines the collapsed-run macros (qgen_sweep/collapse.py): is_collapsed(dataset,
--      train_acc, train_loss) and collapsed_status() ('collapsed', or 'done' under
--      `report --include-collapsed`).
--   4. This file runs; then, when raw_measures exists, every analysis/measures*.sql in name order
--      (e.g. `CREATE OR REPLACE VIEW measures AS SELECT ... FROM raw_measures ...`), and when
--      raw_robustness exists, every analysis/robustness*.sql.
--
-- Conventions: accuracies are fractions in [0, 1] in every view (reports show percent); `bits` is
-- 2, 4, 8 or 32 (32 = FP32, no quantizer); `precision` is the label 'Int2', 'Int4', 'Int8', 'FP32'.
-- Statements are separated by semicolons; keep one statement per view.

CREATE OR REPLACE MACRO precision_label(b) AS
    CASE WHEN b = 32 THEN 'FP32' ELSE 'Int' || CAST(b AS VARCHAR) END;

-- Display order of the paper's tables: FP32, Int8, Int4, Int2.
CREATE OR REPLACE MACRO precision_order(b) AS
    CASE b WHEN 32 THEN 0 WHEN 8 THEN 1 WHEN 4 THEN 2 WHEN 2 THEN 3 ELSE 4 END;

-- One final row per finished trial, config + final metrics. status: 'done', 'diverged', or
-- 'collapsed' (trained to the end at chance level or with a huge loss: qgen_sweep/collapse.py,
-- docs/science.md), derived here so every store is classified by the same rule; statistics that
-- count status = 'done' leave collapsed trials out. `collapsed` is true for them whatever the
-- status shows (report --include-collapsed shows them as 'done').
CREATE OR REPLACE VIEW trials AS
SELECT
    * REPLACE (
        CASE
            WHEN status = 'done' AND is_collapsed(dataset, train_acc, train_loss)
                THEN collapsed_status()
            ELSE status
        END AS status
    ),
    precision_label(bits) AS precision,
    coalesce(status = 'done' AND is_collapsed(dataset, train_acc, train_loss), false) AS collapsed
FROM raw_trials;

-- One row per trained epoch (1-based `epoch`), for loss curves.
CREATE OR REPLACE VIEW epochs AS
SELECT *
FROM raw_epochs;

-- One row per store under the results directory: its label (the `sweep` of every other view),
-- the sweep's name, its path and its spec hash.
CREATE OR REPLACE VIEW stores AS
SELECT *
FROM raw_stores;

-- One row per failed attempt (the trial may have succeeded on a later attempt).
CREATE OR REPLACE VIEW failures AS
SELECT *
FROM raw_failures;

-- Every planned trial with its current state, in the words (and by the rules) of
-- `qgen-sweep status` (qgen_sweep/store.py, sweep_status):
--   done / collapsed / diverged  the trial has a final row (its status in the trials view);
--   running          no final row, started, and a launch or resume holds the store's lock now;
--   failed           no final row, at least one failed attempt, nobody running it;
--   interrupted      no final row, started (an attempts log), no failure, nobody running it;
--   pending          not started yet.
-- raw_started (Python: one row per trial with an attempts log; `running` = the lock is held)
-- is what the files say about starts; epochs_done counts the per-epoch rows written so far.
-- no_curve: the trial has a final row but no epoch rows (its epochs file was lost; the next
-- launch / resume of a grid sweep runs it again to write them, `status` lists it meanwhile).
CREATE OR REPLACE VIEW plan AS
WITH fails AS (
    SELECT sweep, trial_id, count(*) AS failed_attempts, max(time) AS last_failure
    FROM raw_failures
    GROUP BY ALL
),
progress AS (
    SELECT sweep, trial_id, max(epoch) AS epochs_done
    FROM raw_epochs
    GROUP BY ALL
)
SELECT
    p.*,
    precision_label(p.bits) AS precision,
    CASE
        WHEN t.status IS NOT NULL THEN t.status
        WHEN s.running THEN 'running'
        WHEN f.trial_id IS NOT NULL THEN 'failed'
        WHEN s.trial_id IS NOT NULL THEN 'interrupted'
        ELSE 'pending'
    END AS state,
    coalesce(f.failed_attempts, 0) AS failed_attempts,
    coalesce(g.epochs_done, 0) AS epochs_done,
    t.status IS NOT NULL AND g.trial_id IS NULL AS no_curve
FROM raw_plan AS p
LEFT JOIN trials AS t ON t.sweep = p.sweep AND t.trial_id = p.trial_id
LEFT JOIN fails AS f ON f.sweep = p.sweep AND f.trial_id = p.trial_id
LEFT JOIN progress AS g ON g.sweep = p.sweep AND g.trial_id = p.trial_id
LEFT JOIN raw_started AS s ON s.sweep = p.sweep AND s.trial_id = p.trial_id;

-- Column descriptions, shown by `qgen-sweep query --schema`.
COMMENT ON COLUMN trials.gap IS 'generalization gap: test_loss - train_loss (nats), final model';
COMMENT ON COLUMN trials.train_loss IS 'cross-entropy on the training set, final model (nats)';
COMMENT ON COLUMN trials.test_loss IS 'cross-entropy on the test set, final model (nats)';
COMMENT ON COLUMN trials.train_acc IS 'accuracy on the training set, a fraction in [0, 1]';
COMMENT ON COLUMN trials.test_acc IS 'accuracy on the test set, a fraction in [0, 1]';
COMMENT ON COLUMN trials.bits IS 'weight precision: 2, 4, 8 (LSQ) or 32 (FP32)';
COMMENT ON COLUMN trials.precision IS 'Int2, Int4, Int8 or FP32';
COMMENT ON COLUMN trials.status IS 'done, diverged or collapsed';
COMMENT ON COLUMN trials.collapsed IS 'finished at chance-level accuracy or with a huge loss';
COMMENT ON COLUMN trials.l2_norm IS 'L2 norm of all conv weights of the final model';
COMMENT ON COLUMN epochs.epoch IS 'epoch number, from 1';
COMMENT ON COLUMN epochs.train_acc IS 'training accuracy of the epoch, a fraction in [0, 1]';
COMMENT ON COLUMN epochs.test_acc IS 'test accuracy after the epoch, a fraction in [0, 1]';
COMMENT ON COLUMN plan.state IS 'done, collapsed, diverged, running, failed, interrupted, pending';
COMMENT ON COLUMN plan.epochs_done IS 'per-epoch rows written so far';
COMMENT ON COLUMN plan.failed_attempts IS 'failed attempts recorded for the trial';
