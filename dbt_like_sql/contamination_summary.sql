-- How contaminated is each eval set by each corpus split? One row per eval_set x split x n-gram size: items checked,
-- the contamination rate (share of items flagged by the `contamination` asset), the item counts in the four
-- Llama-2 subsets of contaminated_share (they overlap: clean < 0.2 <= not_clean; not_dirty < 0.8 <= dirty), the
-- mean n-gram overlap and contaminated share, the substring hit rate (items with at least one substring hit) and
-- the mean nearest-neighbour distance with the split's embedded share (below 1 under an `embed_sample` rate: the
-- distance is then measured over a sample of the split's chunks, an upper bound of the distance to the whole split).
SELECT
    eval_set,
    split,
    ngram_n,
    count(DISTINCT sample_id) AS n_items,
    count(*) FILTER (WHERE flagged) AS n_flagged,
    avg(flagged::INTEGER) AS contamination_rate,
    count(*) FILTER (WHERE contaminated_share < 0.2) AS n_clean,
    count(*) FILTER (WHERE contaminated_share >= 0.2) AS n_not_clean,
    count(*) FILTER (WHERE contaminated_share < 0.8) AS n_not_dirty,
    count(*) FILTER (WHERE contaminated_share >= 0.8) AS n_dirty,
    avg(ngram_overlap) AS mean_ngram_overlap,
    avg(contaminated_share) AS mean_contaminated_share,
    avg(rare_share) AS mean_rare_share,
    max(longest_span) AS max_longest_span,
    avg((substring_hits > 0)::INTEGER) AS substring_hit_rate,
    avg(nn_distance) AS mean_nn_distance,
    min(embed_share) AS embed_share
FROM contamination
GROUP BY eval_set, split, ngram_n
ORDER BY eval_set, split, ngram_n
