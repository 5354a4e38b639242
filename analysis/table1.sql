-- Paper Table 1: per sweep, dataset and precision (rows in the order FP32, Int8, Int4, Int2).
--   n          trials that finished with status 'done' (the only ones in the means)
--   collapsed  trials that trained to the end at chance level or with a huge loss (counted;
--              excluded unless report --include-collapsed, which counts them in n too)
--   diverged   trials that finished with status 'diverged' (counted, excluded)
--   failed     trials with a failed attempt and no final row (counted, excluded)
--   <metric>_mean / <metric>_std: mean and sample standard deviation (n - 1 denominator) over the
--   done trials; accuracies in percent, losses and gap (test loss - train loss) in nats.
--   gap_median: the median gap of the done trials (robust to a few collapsed runs whose huge
--   finite losses dominate the mean).
-- Reads the views of views.sql only.
WITH failed AS (
    SELECT DISTINCT
        f.sweep,
        f.trial_id,
        f.bits,
        -- A failed trial's dataset comes from the plan; without a plan, from its sweep's trials.
        coalesce(
            p.dataset,
            (SELECT min(t.dataset) FROM trials AS t WHERE t.sweep = f.sweep)
        ) AS dataset
    FROM failures AS f
    LEFT JOIN plan AS p ON p.sweep = f.sweep AND p.trial_id = f.trial_id
    WHERE NOT EXISTS (
        SELECT 1 FROM trials AS t WHERE t.sweep = f.sweep AND t.trial_id = f.trial_id
    )
),
outcomes AS (
    SELECT sweep, dataset, bits, status, collapsed, train_acc, test_acc, train_loss, test_loss, gap
    FROM trials
    UNION ALL BY NAME
    SELECT sweep, dataset, bits, 'failed' AS status
    FROM failed
)
SELECT
    sweep,
    dataset,
    bits,
    precision_label(bits) AS precision,
    count(*) FILTER (WHERE status = 'done') AS n,
    count(*) FILTER (WHERE collapsed) AS collapsed,
    count(*) FILTER (WHERE status = 'diverged') AS diverged,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    100 * avg(train_acc) FILTER (WHERE status = 'done') AS train_acc_mean,
    100 * stddev_samp(train_acc) FILTER (WHERE status = 'done') AS train_acc_std,
    100 * avg(test_acc) FILTER (WHERE status = 'done') AS test_acc_mean,
    100 * stddev_samp(test_acc) FILTER (WHERE status = 'done') AS test_acc_std,
    avg(train_loss) FILTER (WHERE status = 'done') AS train_loss_mean,
    stddev_samp(train_loss) FILTER (WHERE status = 'done') AS train_loss_std,
    avg(test_loss) FILTER (WHERE status = 'done') AS test_loss_mean,
    stddev_samp(test_loss) FILTER (WHERE status = 'done') AS test_loss_std,
    avg(gap) FILTER (WHERE status = 'done') AS gap_mean,
    stddev_samp(gap) FILTER (WHERE status = 'done') AS gap_std,
    median(gap) FILTER (WHERE status = 'done') AS gap_median
FROM outcomes
GROUP BY sweep, dataset, bits
ORDER BY sweep, dataset, precision_order(bits)
