-- Per sweep, dataset and precision: number of FP32-twin pairs and mean Int-b minus FP32
-- difference of gap, train loss and test accuracy (percentage points). The paired placeholder is
-- replaced by the text of paired.sql (the pairs); the bootstrap CI and Wilcoxon p-value are computed in Python
-- (qgen_sweep/analysis/stats.py) over the same pairs.
SELECT
    sweep,
    dataset,
    bits,
    any_value(precision) AS precision,
    count(*) AS n_pairs,
    avg(gap_diff) AS gap_diff,
    avg(train_loss_diff) AS train_loss_diff,
    avg(test_acc_diff) AS test_acc_diff
FROM ({paired})
GROUP BY sweep, dataset, bits
ORDER BY sweep, dataset, precision_order(bits)
