-- Mean train and test loss per sweep, precision and epoch over the done trials (figure: loss
-- curves). Epochs without a test evaluation have NaN test loss and are left out of its mean.
SELECT
    e.sweep,
    e.bits,
    precision_label(e.bits) AS precision,
    e.epoch,
    avg(e.train_loss) AS train_loss,
    avg(e.test_loss) FILTER (WHERE NOT isnan(e.test_loss)) AS test_loss,
    count(*) AS n
FROM epochs AS e
SEMI JOIN trials AS t ON t.sweep = e.sweep AND t.trial_id = e.trial_id AND t.status = 'done'
GROUP BY e.sweep, e.bits, e.epoch
ORDER BY e.sweep, precision_order(e.bits), e.epoch
