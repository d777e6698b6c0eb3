-- How much does each model memorize? One row per model: how it was trained (training_runs: optimizer, seed, stage,
-- final validation loss; empty for models trained elsewhere), its verbatim-recall exact and normalized rates and mean
-- character similarity (verbatim_recall), its extraction exact rate per split (extraction, as a JSON map split ->
-- rate), and its membership AUROC for loss, zlib and Min-K% / Min-K%++ at 20% (membership_auroc).
WITH recall AS (
    SELECT
        model_id,
        count(*) AS recall_items,
        avg(exact::INTEGER) AS recall_exact_rate,
        avg(normalized::INTEGER) AS recall_normalized_rate,
        avg(char_similarity) AS recall_char_similarity
    FROM verbatim_recall
    GROUP BY model_id
),
extracted AS (
    SELECT model_id, split, avg(exact::INTEGER) AS rate, count(*) AS n
    FROM extraction
    GROUP BY ALL
),
extraction_by_model AS (
    SELECT model_id, to_json(map(list(split ORDER BY split), list(round(rate, 4) ORDER BY split))) AS extraction_rate
    FROM extracted
    GROUP BY model_id
),
mia AS (
    SELECT
        model_id,
        any_value(labels) AS membership_labels,
        max(CASE WHEN score = 'loss' THEN auroc END) AS auroc_loss,
        max(CASE WHEN score = 'zlib' THEN auroc END) AS auroc_zlib,
        max(CASE WHEN score = 'min_k_20' THEN auroc END) AS auroc_min_k_20,
        max(CASE WHEN score = 'min_k_pp_20' THEN auroc END) AS auroc_min_k_pp_20
    FROM membership_auroc
    GROUP BY model_id
),
models AS (
    SELECT model_id FROM recall
    UNION SELECT model_id FROM extracted
    UNION SELECT model_id FROM mia
    UNION SELECT model_id FROM training_runs WHERE stage NOT IN ('lira', 'sweep')  -- calibration models are not evaluated
)
SELECT
    m.model_id,
    t.stage,
    t.optimizer,
    t.seed,
    t.status,
    t.final_val_loss,
    r.recall_items,
    r.recall_exact_rate,
    r.recall_normalized_rate,
    r.recall_char_similarity,
    e.extraction_rate,
    i.membership_labels,
    i.auroc_loss,
    i.auroc_zlib,
    i.auroc_min_k_20,
    i.auroc_min_k_pp_20
FROM models AS m
LEFT JOIN training_runs AS t ON t.model_id = m.model_id
LEFT JOIN recall AS r ON r.model_id = m.model_id
LEFT JOIN extraction_by_model AS e ON e.model_id = m.model_id
LEFT JOIN mia AS i ON i.model_id = m.model_id
ORDER BY t.stage NULLS FIRST, t.optimizer, t.seed, m.model_id
