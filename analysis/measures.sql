-- Generalization measures (paper Table 3): one row per measured trial, from raw_measures
-- (measures/bits=B/<id>.parquet, columns in qgen_sweep/measures/schema.py) joined with the trial's
-- configuration and generalization gap. Run by qgen_sweep/analysis/db.py after views.sql when some
-- store has measures (see the header of views.sql).
--
-- Normalised measures (sqrt(raw / m)): pacbayes_init, pacbayes_orig, pacbayes_mag_init,
-- pacbayes_mag_orig, sharpness_init, sharpness_orig, sharpness_mag_init, sharpness_mag_orig.
-- Raw searches: sigma, sigma_mag, alpha, alpha_mag (+ _drop, _iterations, _converged); raw bounds:
-- <measure>_raw; flatness 1/scale^2: pacbayes_flatness, ..., sharpness_mag_flatness. A family not
-- computed (`qgen-sweep measure --only`) leaves its columns NULL.
CREATE OR REPLACE VIEW measures AS
SELECT
    m.*,
    precision_label(m.bits) AS precision,
    t.arch,
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
    t.gap,
    -- The settings that change the numbers (docs/science.md), one label per Table 3.
    concat_ws(', ', 'noise ' || m.noise, 'bn_affine ' || m.bn_affine,
              'ascent_lr ' || CAST(m.ascent_lr AS VARCHAR),
              'ascent_steps ' || CAST(m.ascent_steps AS VARCHAR),
              'restarts ' || CAST(m.restarts AS VARCHAR),
              'mc_samples ' || CAST(m.mc_samples AS VARCHAR)) AS settings
FROM raw_measures AS m
LEFT JOIN trials AS t ON t.sweep = m.sweep AND t.trial_id = m.trial_id;
