-- One point per done trial for the gap figures: precision, gap and test accuracy (percent).
SELECT sweep, bits, precision_label(bits) AS precision, gap, 100 * test_acc AS test_acc
FROM trials
WHERE status = 'done'
ORDER BY sweep, precision_order(bits), trial_id
