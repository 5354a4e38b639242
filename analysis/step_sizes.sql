-- Paper Figure 1: the learned LSQ step size of each quantized layer, per sweep and precision:
-- mean and sample standard deviation over the done trials. Layers are matched by name (models
-- of different depth share their first layers) and ordered by their position in the network.
WITH per_layer AS (
    SELECT
        sweep,
        bits,
        unnest(step_sizes) AS step_size,
        unnest(step_size_layers) AS layer_name,
        unnest(range(1, len(step_sizes) + 1)) AS layer_index
    FROM trials
    WHERE status = 'done' AND bits <> 32 AND len(step_sizes) > 0
)
SELECT
    sweep,
    bits,
    precision_label(bits) AS precision,
    coalesce(layer_name, 'layer ' || CAST(layer_index AS VARCHAR)) AS layer,
    min(layer_index) AS layer_index,
    avg(step_size) AS step_size_mean,
    stddev_samp(step_size) AS step_size_std,
    count(step_size) AS n
FROM per_layer
WHERE step_size IS NOT NULL
GROUP BY sweep, bits, layer
ORDER BY sweep, precision_order(bits), layer_index, layer
