-- Paper Table 2: L2 norm of the weight vector (all conv weights) of the done trials, per sweep,
-- dataset and precision (rows with depth and width NULL), and per precision x depth x width.
-- Mean and sample standard deviation (n - 1 denominator).
SELECT
    sweep,
    dataset,
    bits,
    precision_label(bits) AS precision,
    depth,
    width,
    count(*) AS n,
    avg(l2_norm) AS l2_norm_mean,
    stddev_samp(l2_norm) AS l2_norm_std
FROM trials
WHERE status = 'done'
GROUP BY GROUPING SETS ((sweep, dataset, bits), (sweep, dataset, bits, depth, width))
ORDER BY sweep, dataset, precision_order(bits), depth NULLS FIRST, width NULLS FIRST
