-- Are harder eval questions further from the training data? One row per eval_set x split x embedding model x
-- difficulty: MATH-500 / MATH `level` (1-5) or GSM8K `n_steps` (calculator annotations in the reference solution),
-- from the eval_samples metadata; n items, mean / median / standard deviation of the nearest-neighbour cosine
-- distance (eval_proximity.min_cosine) and mean / median percentile in the split's reference distribution.
WITH items AS (
    SELECT
        p.eval_set,
        p.split,
        p.embed_model,
        p.sample_id,
        p.min_cosine,
        p.percentile,
        TRY_CAST(s.metadata ->> '$.level' AS INTEGER) AS level,
        TRY_CAST(s.metadata ->> '$.n_steps' AS INTEGER) AS n_steps
    FROM eval_proximity AS p
    JOIN eval_samples AS s ON s.sample_id = p.sample_id
)
SELECT
    eval_set,
    split,
    embed_model,
    CASE WHEN level IS NOT NULL THEN 'level' ELSE 'n_steps' END AS difficulty_kind,
    coalesce(level, n_steps) AS difficulty,
    count(*) AS n,
    avg(min_cosine) AS mean_min_cosine,
    median(min_cosine) AS median_min_cosine,
    stddev_samp(min_cosine) AS sd_min_cosine,
    avg(percentile) AS mean_percentile,
    median(percentile) AS median_percentile
FROM items
WHERE coalesce(level, n_steps) IS NOT NULL
GROUP BY ALL
ORDER BY eval_set, split, embed_model, difficulty_kind, difficulty
