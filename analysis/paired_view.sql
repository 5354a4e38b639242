-- The `paired` view: each finished Int-b trial next to its finished FP32 twin (the pairs of
-- paired.sql, whose text replaces the placeholder below), for `qgen-sweep query`. As in every
-- view, the accuracy difference is a fraction here (paired.sql, behind the report's paired table,
-- gives it in percentage points). Run by qgen_sweep/analysis/db.py after views.sql.
CREATE OR REPLACE VIEW paired AS
SELECT * REPLACE (test_acc_diff / 100 AS test_acc_diff)
FROM ({paired});

COMMENT ON VIEW paired IS 'each Int-b trial (bits 2, 4, 8) with its FP32 twin, both done';
COMMENT ON COLUMN paired.fp32_trial_id IS 'the FP32 twin: same sweep and configuration but bits';
COMMENT ON COLUMN paired.gap_diff IS 'gap of the Int-b trial minus its FP32 twin''s (nats)';
COMMENT ON COLUMN paired.train_loss_diff IS 'final training loss, Int-b minus FP32 (nats)';
COMMENT ON COLUMN paired.test_acc_diff IS 'test accuracy, Int-b minus FP32 (fraction)';
