-- What is each eval question's nearest training chunk? One row per eval item x split x embedding model: the
-- question text (eval_samples.prompt), the nearest chunk (id, document, text) and its cosine / L2 distance and
-- percentile (eval_proximity), the split's embedded share (below 1 under an `embed_sample` rate: the distance is an
-- upper bound), and the item's closeness rank in its eval set and split (1 = closest to the split).
SELECT
    p.eval_set,
    p.sample_id,
    p.split,
    p.embed_model,
    rank() OVER (PARTITION BY p.eval_set, p.split, p.embed_model ORDER BY p.min_cosine) AS closeness_rank,
    s.prompt AS question,
    p.min_cosine,
    p.min_l2,
    p.percentile,
    p.nn_chunk_id,
    p.nn_doc_id,
    p.nn_text,
    p.embed_share
FROM eval_proximity AS p
LEFT JOIN eval_samples AS s ON s.sample_id = p.sample_id
ORDER BY p.eval_set, p.split, p.embed_model, p.min_cosine, p.sample_id
