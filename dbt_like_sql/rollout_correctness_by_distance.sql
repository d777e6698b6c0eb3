-- Are models more often right when their answer sits close to the training data? One row per model x split x
-- eval_set x embedding model x distance bin: the answer-level percentile of each rollout (rollout_proximity,
-- unit = 'answer'; the closest answer unit when there are several) in five fixed bins of 20 percentile points
-- (1 = 0-20, closest to the split, ... 5 = 80-100), the rollouts in the bin, how many are graded, and accuracy.
WITH answers AS (
    SELECT
        model_id,
        split,
        eval_set,
        embed_model,
        sample_id,
        params_hash,
        min(cosine) AS cosine,
        min(percentile) AS percentile
    FROM rollout_proximity
    WHERE unit = 'answer'
    GROUP BY ALL
)
SELECT
    a.model_id,
    a.split,
    coalesce(a.eval_set, r.eval_set) AS eval_set,
    a.embed_model,
    least(floor(a.percentile / 20)::INTEGER, 4) + 1 AS percentile_bin,
    (least(floor(a.percentile / 20)::INTEGER, 4)) * 20 AS bin_low,
    (least(floor(a.percentile / 20)::INTEGER, 4) + 1) * 20 AS bin_high,
    count(*) AS n,
    count(r.correct) AS n_graded,
    avg(r.correct::INTEGER) AS accuracy,
    avg(a.cosine) AS mean_cosine
FROM answers AS a
LEFT JOIN rollouts AS r
    ON r.sample_id = a.sample_id AND r.model_id = a.model_id AND r.params_hash = a.params_hash
WHERE a.percentile IS NOT NULL
GROUP BY ALL
ORDER BY a.model_id, a.split, eval_set, a.embed_model, percentile_bin
