-- Paper Figure 1: the learned LSQ step size of each quantized layer, per sweep, architecture,
-- depth and precision: mean and sample standard deviation over the done trials. Layers are
-- matched by name within one architecture and depth (a layer's place in the network, e.g. the
-- head, depends on the depth) and ordered by their position in the network. `arch` comes from
-- config_json (absent there for NiN, the default). `layers` = how many quantized layers the
-- models of that depth have; `first_last` = the first/last-layer policy of the trials (TrialConfig:
-- 'int8' keeps the first and last layer at 8 bits as in LSQ, 'same' quantizes them like the rest).
WITH per_layer AS (
    SELECT
        sweep,
        bits,
        coalesce(json_extract_string(config_json, '$.arch'), 'nin') AS arch,
        depth,
        coalesce(json_extract_string(config_json, '$.first_last'), 'int8') AS first_last,
        len(step_sizes) AS layers,
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
    count(step_size) AS n,
    depth,
    first_last,
    max(layers) AS layers,
    arch
FROM per_layer
WHERE step_size IS NOT NULL
GROUP BY sweep, arch, depth, first_last, bits, layer
ORDER BY sweep, arch, depth, first_last, precision_order(bits), layer_index, layer
