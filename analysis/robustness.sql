-- Robustness under corruptions (paper section 4.3): one row per trial, source, corruption and
-- severity, from raw_robustness (robustness/bits=B/<id>.parquet, columns in
-- qgen_sweep/robustness/schema.py) joined with the trial's configuration and status. Run by
-- qgen_sweep/analysis/db.py after views.sql when some store has robustness files.
--
-- gap = loss on the corrupted test set - the trial's clean training loss (nats); accuracy is a
-- fraction. source: 'generated' (on the fly) or 'released' (CIFAR-C arrays, ImageNet-C folders).
-- twin_key: the configuration with bits masked, to pair each Int-b trial with its FP32 twin.

-- The benchmark's order of the corruptions (noise, blur, weather, digital, then the extras).
CREATE OR REPLACE MACRO corruption_order(name) AS CASE name
    WHEN 'gaussian_noise' THEN 0 WHEN 'shot_noise' THEN 1 WHEN 'impulse_noise' THEN 2
    WHEN 'defocus_blur' THEN 3 WHEN 'glass_blur' THEN 4 WHEN 'motion_blur' THEN 5
    WHEN 'zoom_blur' THEN 6 WHEN 'snow' THEN 7 WHEN 'frost' THEN 8 WHEN 'fog' THEN 9
    WHEN 'brightness' THEN 10 WHEN 'contrast' THEN 11 WHEN 'elastic_transform' THEN 12
    WHEN 'pixelate' THEN 13 WHEN 'jpeg_compression' THEN 14 WHEN 'speckle_noise' THEN 15
    WHEN 'gaussian_blur' THEN 16 WHEN 'spatter' THEN 17 WHEN 'saturate' THEN 18 ELSE 19 END;

CREATE OR REPLACE VIEW robustness AS
SELECT
    r.*,
    precision_label(r.bits) AS precision,
    t.arch,
    t.optimizer,
    t.lr,
    t.lr_index,
    t.weight_decay,
    t.depth,
    t.width,
    t.status,
    t.collapsed,
    regexp_replace(coalesce(t.config_json, ''), '"bits":[0-9]+', '"bits":_') AS twin_key
FROM raw_robustness AS r
LEFT JOIN trials AS t ON t.sweep = r.sweep AND t.trial_id = r.trial_id;

-- Paper Table 4: the mean gap under each corruption and severity per precision, over the done
-- trials (collapsed ones are left out unless report --include-collapsed), and how many models.
CREATE OR REPLACE VIEW robustness_table4 AS
SELECT
    sweep,
    dataset,
    source,
    corruption,
    severity,
    avg(gap) FILTER (WHERE bits = 32) AS "FP32",
    avg(gap) FILTER (WHERE bits = 8) AS "Int8",
    avg(gap) FILTER (WHERE bits = 4) AS "Int4",
    avg(gap) FILTER (WHERE bits = 2) AS "Int2",
    count(*) FILTER (WHERE bits = 32) AS n_fp32,
    count(*) FILTER (WHERE bits = 8) AS n_int8,
    count(*) FILTER (WHERE bits = 4) AS n_int4,
    count(*) FILTER (WHERE bits = 2) AS n_int2
FROM robustness
WHERE status = 'done'
GROUP BY sweep, dataset, source, corruption, severity
ORDER BY sweep, dataset, source, corruption_order(corruption), corruption, severity;

-- Each Int-b trial's corrupted set next to its FP32 twin's same set (both done): differences
-- Int-b minus FP32 (gap in nats, accuracy in percentage points), and both errors for the mCE.
CREATE OR REPLACE VIEW robustness_pairs AS
SELECT
    q.sweep,
    q.dataset,
    q.source,
    q.corruption,
    q.severity,
    q.bits,
    q.precision,
    q.trial_id,
    f.trial_id AS fp32_trial_id,
    q.gap - f.gap AS gap_diff,
    100 * (q.accuracy - f.accuracy) AS accuracy_diff,
    1 - q.accuracy AS error,
    1 - f.accuracy AS fp32_error
FROM robustness AS q
JOIN robustness AS f
    ON f.bits = 32
    AND q.bits <> 32
    AND f.sweep = q.sweep
    AND f.dataset = q.dataset
    AND f.twin_key = q.twin_key
    AND f.source = q.source
    AND f.corruption = q.corruption
    AND f.severity = q.severity
WHERE q.status = 'done' AND f.status = 'done'
ORDER BY q.sweep, q.dataset, q.source, precision_order(q.bits), corruption_order(q.corruption),
         q.corruption, q.severity, q.trial_id;
