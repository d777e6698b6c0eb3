-- Is an SFT model closer to its training data than its base? One row per run x split: the base model and its SFT
-- model (training_runs), the mean cosine distance of their whole answers to the split (rollout_proximity, unit
-- 'answer'), and the difference SFT - base (negative: the SFT model's answers sit closer to that split).
WITH pairs AS (
    SELECT b.run, b.model_id AS base_model, s.model_id AS sft_model
    FROM training_runs AS b
    JOIN training_runs AS s ON s.run = b.run AND s.stage = 'sft' AND s.status = 'ok'
    WHERE b.stage = 'base' AND b.status = 'ok'
),
distance AS (
    SELECT model_id, split, avg(cosine) AS mean_cosine, count(*) AS answers
    FROM rollout_proximity
    WHERE unit = 'answer'
    GROUP BY ALL
)
SELECT
    p.run,
    db.split,
    p.base_model,
    p.sft_model,
    db.answers AS base_answers,
    ds.answers AS sft_answers,
    db.mean_cosine AS base_mean_cosine,
    ds.mean_cosine AS sft_mean_cosine,
    ds.mean_cosine - db.mean_cosine AS sft_minus_base
FROM pairs AS p
JOIN distance AS db ON db.model_id = p.base_model
JOIN distance AS ds ON ds.model_id = p.sft_model AND ds.split = db.split
ORDER BY p.run, db.split
