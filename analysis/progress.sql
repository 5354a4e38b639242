-- How far each sweep is: planned trials (plan.parquet; without it, finished + failed), finished
-- (a final row: done, collapsed or diverged), failed (failed attempts, no final row) and pending
-- (the rest). `done` never counts collapsed trials here, whatever report --include-collapsed says.
WITH sweeps AS (
    SELECT sweep FROM plan
    UNION
    SELECT sweep FROM trials
    UNION
    SELECT sweep FROM failures
),
planned AS (
    SELECT sweep, count(*) AS planned FROM plan GROUP BY sweep
),
finished AS (
    SELECT
        sweep,
        count(*) AS finished,
        count(*) FILTER (WHERE status = 'done' AND NOT collapsed) AS done,
        count(*) FILTER (WHERE collapsed) AS collapsed,
        count(*) FILTER (WHERE status = 'diverged') AS diverged
    FROM trials
    GROUP BY sweep
),
failed AS (
    SELECT f.sweep, count(DISTINCT f.trial_id) AS failed
    FROM failures AS f
    ANTI JOIN trials AS t ON t.sweep = f.sweep AND t.trial_id = f.trial_id
    GROUP BY f.sweep
),
counts AS (
    SELECT
        s.sweep,
        coalesce(fi.finished, 0) AS finished,
        coalesce(fi.done, 0) AS done,
        coalesce(fi.collapsed, 0) AS collapsed,
        coalesce(fi.diverged, 0) AS diverged,
        coalesce(fa.failed, 0) AS failed,
        coalesce(p.planned, coalesce(fi.finished, 0) + coalesce(fa.failed, 0)) AS planned
    FROM sweeps AS s
    LEFT JOIN planned AS p USING (sweep)
    LEFT JOIN finished AS fi USING (sweep)
    LEFT JOIN failed AS fa USING (sweep)
)
SELECT *, greatest(planned - finished - failed, 0) AS pending
FROM counts
ORDER BY sweep
