-- Does a Muon-trained model memorize less than an AdamW one? One row per base-model optimizer (models trained here,
-- training_runs stage 'base'): seeds, mean and spread of the final validation loss (compare only at matched loss),
-- and the mean over seeds of the recall exact rate, recall character similarity, extraction exact rate on the
-- training split and membership AUROC (Min-K% 20). The intervals of the differences are in
-- memorization_comparisons (asset memorization_report).
WITH runs AS (
    SELECT model_id, optimizer, seed, final_val_loss
    FROM training_runs
    WHERE stage = 'base' AND status = 'ok'
),
per_run AS (
    SELECT
        r.model_id,
        r.optimizer,
        r.seed,
        r.final_val_loss,
        (SELECT avg(v.exact::INTEGER) FROM verbatim_recall AS v WHERE v.model_id = r.model_id) AS recall_exact_rate,
        (SELECT avg(v.char_similarity) FROM verbatim_recall AS v WHERE v.model_id = r.model_id) AS recall_similarity,
        (SELECT avg(x.exact::INTEGER) FROM extraction AS x WHERE x.model_id = r.model_id AND x.member)
            AS extraction_rate,
        (SELECT max(a.auroc) FROM membership_auroc AS a WHERE a.model_id = r.model_id AND a.score = 'min_k_20')
            AS membership_auroc
    FROM runs AS r
)
SELECT
    optimizer,
    count(*) AS seeds,
    avg(final_val_loss) AS mean_val_loss,
    min(final_val_loss) AS min_val_loss,
    max(final_val_loss) AS max_val_loss,
    avg(recall_exact_rate) AS recall_exact_rate,
    avg(recall_similarity) AS recall_similarity,
    avg(extraction_rate) AS extraction_rate,
    avg(membership_auroc) AS membership_auroc
FROM per_run
GROUP BY optimizer
ORDER BY optimizer
