-- Paper Table 3: mean of each normalised measure per sweep, dataset, arch, measure settings and
-- precision, one row per (sweep, dataset, arch, settings, measure) with the precisions FP32,
-- Int8, Int4, Int2 side by side (as the paper, one table per architecture; `settings` names the
-- measure settings that produced it)
-- (qgen_sweep.measures.report.table3 marks the lowest). Means skip NULLs (families not computed).
-- Only trials with status 'done' count (collapsed ones only under report --include-collapsed).
CREATE OR REPLACE VIEW measures_table3 AS
WITH long AS (
    UNPIVOT (
        SELECT sweep, dataset, arch, settings, bits, pacbayes_init, pacbayes_orig, pacbayes_mag_init,
               pacbayes_mag_orig, sharpness_init, sharpness_orig, sharpness_mag_init,
               sharpness_mag_orig
        FROM measures
        WHERE status = 'done'
    )
    ON pacbayes_init, pacbayes_orig, pacbayes_mag_init, pacbayes_mag_orig, sharpness_init,
       sharpness_orig, sharpness_mag_init, sharpness_mag_orig
    INTO NAME measure VALUE value
)
SELECT
    sweep,
    dataset,
    arch,
    settings,
    measure,
    avg(value) FILTER (WHERE bits = 32) AS "FP32",
    avg(value) FILTER (WHERE bits = 8) AS "Int8",
    avg(value) FILTER (WHERE bits = 4) AS "Int4",
    avg(value) FILTER (WHERE bits = 2) AS "Int2",
    count(value) AS models
FROM long
GROUP BY sweep, dataset, arch, settings, measure
ORDER BY sweep, dataset, arch <> 'nin', arch, settings, CASE measure
    WHEN 'pacbayes_init' THEN 0 WHEN 'pacbayes_orig' THEN 1 WHEN 'pacbayes_mag_init' THEN 2
    WHEN 'pacbayes_mag_orig' THEN 3 WHEN 'sharpness_init' THEN 4 WHEN 'sharpness_orig' THEN 5
    WHEN 'sharpness_mag_init' THEN 6 ELSE 7 END;
