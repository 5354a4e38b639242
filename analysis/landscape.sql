-- Loss landscapes (paper Figure 2; Li et al. 2018): the points of every curve, and one flatness
-- summary per trial and landscape setting. Rows come from raw_landscape
-- (landscape/bits=B/<id>.parquet, LANDSCAPE_SCHEMA in qgen_sweep/landscape/schema.py), joined with
-- the trial's configuration and generalization gap. Run by qgen_sweep/analysis/db.py after
-- views.sql (see the header there); empty views when nothing was computed yet.
--
-- kind: 'surface' (random filter-normalized directions, a and b in [-span, span]), 'init' (a = 0
-- the model at initialisation, a = 1 the kept model), 'twin' (a = 0 the FP32 twin, a = 1 this
-- quantized model). i, j: grid offsets in steps (0, 0 = the kept model on a surface).

-- Every evaluated point, with the precision label.
CREATE OR REPLACE VIEW landscape_points AS
SELECT *, precision_label(bits) AS precision
FROM raw_landscape;

-- One row per (sweep, trial, landscape_id). Flatness summaries of the surface, all in the units of
-- the training loss (nats) over direction coordinates (a step of 1 moves every filter by its norm):
--   config_id                the FP32 twin's trial id: the same for every precision of a configuration
--   n                        training examples every point's loss and accuracy average over
--   loss_centre, acc_centre  the kept model itself (its own training loss and accuracy)
--   radius                   span / 2: the disc the two averages below cover
--   loss_rise                mean loss increase over the grid points within `radius` of the centre
--                            (centre excluded); small = flat
--   acc_drop                 mean training-accuracy drop over the same points (fraction)
--   curvature                mean second derivative of the loss at the centre along the
--                            directions, central differences with the grid step h = span / (grid // 2):
--                            (sum of the 2 * dims neighbours - 2 * dims * loss_centre) / (dims * h^2)
--   init_barrier, twin_barrier  the largest rise of the loss above the straight line between the two
--                            ends of an interpolation, over a in [0, 1] (0 = no barrier; Frankle et
--                            al. 2020's loss barrier); twin_barrier is NULL for FP32 trials
CREATE OR REPLACE VIEW landscape AS
WITH surface AS (
    SELECT * FROM raw_landscape WHERE kind = 'surface'
),
centre AS (
    SELECT sweep, trial_id, landscape_id, loss AS loss_centre, accuracy AS acc_centre
    FROM surface
    WHERE i = 0 AND j = 0
),
flat AS (
    SELECT
        s.sweep, s.trial_id, s.landscape_id,
        any_value(s.dataset) AS dataset, any_value(s.bits) AS bits, any_value(s.dims) AS dims,
        any_value(s.grid) AS grid, any_value(s.span) AS span, any_value(s.seed) AS seed,
        any_value(s.ignore) AS ignore, any_value(s.direction_seed) AS direction_seed,
        coalesce(any_value(s.twin_id), s.trial_id) AS config_id,
        any_value(s.examples) AS n,
        any_value(s.evaluator) AS evaluator, count(*) AS points,
        any_value(c.loss_centre) AS loss_centre, any_value(c.acc_centre) AS acc_centre,
        any_value(s.span) / 2 AS radius,
        avg(s.loss - c.loss_centre) FILTER (
            WHERE s.a * s.a + s.b * s.b <= s.span * s.span / 4 AND NOT (s.i = 0 AND s.j = 0)
        ) AS loss_rise,
        avg(c.acc_centre - s.accuracy) FILTER (
            WHERE s.a * s.a + s.b * s.b <= s.span * s.span / 4 AND NOT (s.i = 0 AND s.j = 0)
        ) AS acc_drop,
        (sum(s.loss) FILTER (WHERE abs(s.i) + abs(s.j) = 1)
            - 2 * any_value(s.dims) * any_value(c.loss_centre))
            / (any_value(s.dims) * power(any_value(s.span) / (any_value(s.grid) // 2), 2))
            AS curvature
    FROM surface AS s
    JOIN centre AS c USING (sweep, trial_id, landscape_id)
    GROUP BY s.sweep, s.trial_id, s.landscape_id
),
line_ends AS (
    SELECT sweep, trial_id, landscape_id, kind,
           any_value(loss) FILTER (WHERE a = 0) AS loss_start,
           any_value(loss) FILTER (WHERE a = 1) AS loss_end
    FROM raw_landscape
    WHERE kind IN ('init', 'twin')
    GROUP BY ALL
),
barriers AS (
    SELECT l.sweep, l.trial_id, l.landscape_id,
           max(l.loss - ((1 - l.a) * e.loss_start + l.a * e.loss_end))
               FILTER (WHERE l.kind = 'init' AND l.a BETWEEN 0 AND 1) AS init_barrier,
           max(l.loss - ((1 - l.a) * e.loss_start + l.a * e.loss_end))
               FILTER (WHERE l.kind = 'twin' AND l.a BETWEEN 0 AND 1) AS twin_barrier
    FROM raw_landscape AS l
    JOIN line_ends AS e USING (sweep, trial_id, landscape_id, kind)
    GROUP BY ALL
)
SELECT
    f.*,
    b.init_barrier,
    b.twin_barrier,
    precision_label(f.bits) AS precision,
    t.optimizer,
    t.lr,
    t.lr_index,
    t.weight_decay,
    t.depth,
    t.width,
    t.status,
    t.collapsed,
    t.train_acc,
    t.test_acc,
    t.train_loss,
    t.test_loss,
    t.gap
FROM flat AS f
LEFT JOIN barriers AS b USING (sweep, trial_id, landscape_id)
LEFT JOIN trials AS t ON t.sweep = f.sweep AND t.trial_id = f.trial_id;

-- The flatness table: mean of each summary per sweep, dataset, landscape setting and precision
-- (FP32, Int8, Int4, Int2 side by side, as the paper's Table 3), with the number of models. Only
-- trials with status 'done' count (collapsed ones only under report --include-collapsed).
CREATE OR REPLACE VIEW landscape_table AS
WITH summaries AS (
    SELECT sweep, dataset, landscape_id, dims, grid, span, bits, loss_rise, acc_drop, curvature,
           init_barrier, twin_barrier
    FROM landscape
    WHERE status = 'done'
),
long AS (
    -- INCLUDE NULLS: a summary no model has (a grid too coarse for the radius, lines not
    -- computed) still gets its row, with NULL means and models = 0.
    SELECT *
    FROM summaries UNPIVOT INCLUDE NULLS (
        value FOR measure IN (loss_rise, acc_drop, curvature, init_barrier, twin_barrier)
    )
)
SELECT
    sweep,
    dataset,
    landscape_id,
    dims,
    grid,
    span,
    measure,
    avg(value) FILTER (WHERE bits = 32) AS "FP32",
    avg(value) FILTER (WHERE bits = 8) AS "Int8",
    avg(value) FILTER (WHERE bits = 4) AS "Int4",
    avg(value) FILTER (WHERE bits = 2) AS "Int2",
    count(value) AS models
FROM long
GROUP BY sweep, dataset, landscape_id, dims, grid, span, measure
ORDER BY sweep, dataset, landscape_id, CASE measure
    WHEN 'loss_rise' THEN 0 WHEN 'acc_drop' THEN 1 WHEN 'curvature' THEN 2
    WHEN 'init_barrier' THEN 3 ELSE 4 END;
