-- Paper Table 2: L2 norm of the weight vector (all conv and linear weights) of the done trials,
-- per sweep, dataset, arch and precision (rows with depth and width NULL), and per precision x
-- depth x width within each arch.
-- Mean and sample standard deviation (n - 1 denominator).
SELECT
    sweep,
    dataset,
    arch,
    bits,
    precision_label(bits) AS precision,
    depth,
    width,
    count(*) AS n,
    avg(l2_norm) AS l2_norm_mean,
    stddev_samp(l2_norm) AS l2_norm_std
FROM trials
WHERE status = 'done'
GROUP BY GROUPING SETS ((sweep, dataset, arch, bits), (sweep, dataset, arch, bits, depth, width))
ORDER BY sweep, dataset, arch <> 'nin', arch, precision_order(bits), depth NULLS FIRST,
    width NULLS FIRST
