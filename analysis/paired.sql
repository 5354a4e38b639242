-- Each Int-b trial (b = 8, 4, 2) next to its FP32 twin: the trial of the same sweep whose
-- configuration equals it in everything but bits (dataset, optimizer, lr, weight_decay, depth,
-- width, base_width, epochs, batch_size, seed, and every other TrialConfig field, compared through
-- config_json with the bits entry masked). Only pairs where both finished with status 'done'.
-- Differences are Int-b minus FP32; test accuracy in percentage points.
WITH done AS (
    SELECT
        *,
        regexp_replace(coalesce(config_json, ''), '"bits":[0-9]+', '"bits":_') AS twin_key
    FROM trials
    WHERE status = 'done'
)
SELECT
    q.sweep,
    q.dataset,
    q.bits,
    precision_label(q.bits) AS precision,
    q.trial_id,
    f.trial_id AS fp32_trial_id,
    q.gap - f.gap AS gap_diff,
    q.train_loss - f.train_loss AS train_loss_diff,
    100 * (q.test_acc - f.test_acc) AS test_acc_diff
FROM done AS q
JOIN done AS f
    ON f.bits = 32
    AND q.bits <> 32
    AND f.sweep = q.sweep
    AND f.dataset = q.dataset
    AND f.optimizer = q.optimizer
    AND f.lr = q.lr
    AND f.weight_decay = q.weight_decay
    AND f.depth = q.depth
    AND f.width = q.width
    AND f.base_width = q.base_width
    AND f.epochs = q.epochs
    AND f.batch_size = q.batch_size
    AND f.seed = q.seed
    AND f.twin_key = q.twin_key
ORDER BY q.sweep, q.dataset, precision_order(q.bits), q.trial_id
