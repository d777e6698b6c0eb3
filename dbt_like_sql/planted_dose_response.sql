-- How many copies does it take? One row per optimizer x planted kind x dose (copies in the training data; 0 = the
-- unplanted control), over every seed: runs, items, the greedy extraction rate, the mean chance that one of 100
-- samples reproduces the secret, mean exposure (bits), the planted text's loss against the reference model's, and
-- (eval items) the answer accuracy. Per-run rows with their intervals are in canary_memorization; the dose where
-- extraction crosses 50% and the optimizer tests over seeds are in memorization_report's page.
SELECT
    optimizer,
    kind,
    dose,
    count(DISTINCT seed) AS seeds,
    count(DISTINCT item_id) AS items,
    avg(greedy_extracted::INTEGER) AS greedy_extraction,
    avg(p_extract_n) AS prob_extraction_100,
    avg(exposure) AS exposure_bits,
    avg(loss_ratio) AS loss_vs_reference,
    avg(answer_correct::INTEGER) AS answer_accuracy
FROM planted_scores
GROUP BY optimizer, kind, dose
ORDER BY kind, dose, optimizer
