-- Loss curves per sweep, optimizer, precision and epoch over the done trials (figure: loss curves,
-- and the dashboard's spread bands): the number of trials, and the median and interquartile range
-- (25th / 75th percentiles) of the train and test loss in nats. Medians, not means: a few
-- collapsed runs with huge finite losses would drag a mean far from every other curve. Epochs
-- without a test evaluation (NaN test loss) are left out of the test statistics.
SELECT
    e.sweep,
    t.optimizer,
    e.bits,
    precision_label(e.bits) AS precision,
    e.epoch,
    count(*) AS n,
    median(e.train_loss) FILTER (WHERE isfinite(e.train_loss)) AS train_loss,
    quantile_cont(e.train_loss, 0.25) FILTER (WHERE isfinite(e.train_loss)) AS train_loss_q25,
    quantile_cont(e.train_loss, 0.75) FILTER (WHERE isfinite(e.train_loss)) AS train_loss_q75,
    median(e.test_loss) FILTER (WHERE isfinite(e.test_loss)) AS test_loss,
    quantile_cont(e.test_loss, 0.25) FILTER (WHERE isfinite(e.test_loss)) AS test_loss_q25,
    quantile_cont(e.test_loss, 0.75) FILTER (WHERE isfinite(e.test_loss)) AS test_loss_q75
FROM epochs AS e
JOIN trials AS t ON t.sweep = e.sweep AND t.trial_id = e.trial_id AND t.status = 'done'
GROUP BY e.sweep, t.optimizer, e.bits, e.epoch
ORDER BY e.sweep, t.optimizer, precision_order(e.bits), e.epoch
