"""Schemas of the proximity-report tables in the results DuckDB (`CPROX_HOME/results.duckdb`), defined once.

Each table is written by one asset (`OWNERS`), replaced per partition in one transaction (delete the partition's
rows, insert the new ones), so re-materializing is idempotent and a crash leaves the previous rows. The SQL models in
`dbt_like_sql/` read these tables; their asset dependencies come from `OWNERS`.

Distances are computed on unit-normalized embeddings: cosine = 1 - cos, l2 = Euclidean, inner_product = -<a, b>
(pgvector's `<#>`, smaller is closer). `percentile` (0-100) places an item's nearest-neighbour cosine distance in
the split's reference distribution (`reference_distances`: random chunks of the split to their nearest chunk of
another document), so distances compare across splits and embedding models. `embed_share` (0-1) is the share of
the split's chunks that had a vector when the row was written: below 1 under an `embed_sample` rate, where a nearest
distance is an upper bound of the distance to the whole split (`lib/corpus/embed_sample.py`).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

DDL = {
    "reference_distances": """
        split TEXT NOT NULL, embed_model TEXT NOT NULL, version TEXT NOT NULL, chunk_id TEXT NOT NULL,
        cosine DOUBLE NOT NULL""",
    "eval_proximity": """
        eval_set TEXT NOT NULL, sample_id TEXT NOT NULL, split TEXT NOT NULL, embed_model TEXT NOT NULL,
        min_cosine DOUBLE, min_l2 DOUBLE, min_inner_product DOUBLE, percentile DOUBLE,
        nn_chunk_id TEXT, nn_doc_id TEXT, nn_text TEXT, embed_share DOUBLE""",
    "eval_neighbors": """
        eval_set TEXT NOT NULL, sample_id TEXT NOT NULL, split TEXT NOT NULL, embed_model TEXT NOT NULL,
        rank INTEGER NOT NULL, chunk_id TEXT NOT NULL, doc_id TEXT NOT NULL, cosine DOUBLE, l2 DOUBLE,
        inner_product DOUBLE""",
    "rollout_proximity": """
        model_id TEXT NOT NULL, split TEXT NOT NULL, eval_set TEXT, sample_id TEXT NOT NULL, params_hash TEXT NOT NULL,
        unit TEXT NOT NULL, idx INTEGER NOT NULL, char_start INTEGER, char_end INTEGER, text TEXT,
        embed_model TEXT NOT NULL, nn_chunk_id TEXT, nn_doc_id TEXT, cosine DOUBLE, l2 DOUBLE, inner_product DOUBLE,
        percentile DOUBLE, embed_share DOUBLE""",
    "contamination": """
        eval_set TEXT NOT NULL, sample_id TEXT NOT NULL, split TEXT NOT NULL, ngram_n INTEGER NOT NULL,
        n_tokens INTEGER NOT NULL, ngram_overlap DOUBLE NOT NULL, contaminated_share DOUBLE NOT NULL,
        longest_span INTEGER NOT NULL, bucket TEXT NOT NULL, substring_hits INTEGER NOT NULL, nn_distance DOUBLE,
        nn_percentile DOUBLE, flagged BOOLEAN NOT NULL, flag_reason TEXT, rare_share DOUBLE, embed_share DOUBLE""",
    "rollout_spans": """
        model_id TEXT NOT NULL, split TEXT NOT NULL, eval_set TEXT, sample_id TEXT NOT NULL, params_hash TEXT NOT NULL,
        token_start INTEGER NOT NULL, token_end INTEGER NOT NULL, char_start INTEGER NOT NULL,
        char_end INTEGER NOT NULL, text TEXT NOT NULL, n_tokens INTEGER NOT NULL, count BIGINT NOT NULL,
        n_docs INTEGER NOT NULL, docs JSON""",
    "proximity_correlations": """
        eval_set TEXT NOT NULL, split TEXT NOT NULL, variable TEXT NOT NULL, model_id TEXT, n INTEGER NOT NULL,
        rho DOUBLE, ci_low DOUBLE, ci_high DOUBLE, p_value DOUBLE""",
    "cluster_nodes": """
        tree TEXT NOT NULL, embed_model TEXT NOT NULL, node_id TEXT NOT NULL, parent_id TEXT, depth INTEGER NOT NULL,
        size INTEGER NOT NULL, quality DOUBLE, split_counts JSON NOT NULL, member_hash TEXT NOT NULL,
        stop_reason TEXT, is_leaf BOOLEAN NOT NULL""",
    "cluster_members": """
        tree TEXT NOT NULL, embed_model TEXT NOT NULL, split TEXT NOT NULL, chunk_id TEXT NOT NULL,
        leaf_id TEXT NOT NULL""",
    "cluster_names": """
        tree TEXT NOT NULL, embed_model TEXT NOT NULL, node_id TEXT NOT NULL, path TEXT NOT NULL, name TEXT NOT NULL,
        description TEXT, keyword_name TEXT NOT NULL, source TEXT NOT NULL, naming_model TEXT, member_hash TEXT NOT NULL,
        error TEXT""",
    "annotations": """
        model_id TEXT NOT NULL, tree TEXT NOT NULL, embed_model TEXT NOT NULL, eval_set TEXT, sample_id TEXT NOT NULL,
        params_hash TEXT NOT NULL, unit TEXT NOT NULL, idx INTEGER NOT NULL, char_start INTEGER NOT NULL,
        char_end INTEGER NOT NULL, text TEXT NOT NULL, leaf_id TEXT NOT NULL, top_id TEXT NOT NULL,
        path TEXT NOT NULL, distance DOUBLE NOT NULL, correct BOOLEAN""",
    "question_clusters": """
        tree TEXT NOT NULL, embed_model TEXT NOT NULL, eval_set TEXT NOT NULL, sample_id TEXT NOT NULL,
        leaf_id TEXT NOT NULL, top_id TEXT NOT NULL, path TEXT NOT NULL, distance DOUBLE NOT NULL""",
    # memorization lab (issue 7): models trained here, recall, extraction, membership, comparisons
    "training_runs": """
        model_id TEXT NOT NULL, run TEXT NOT NULL, stage TEXT NOT NULL, optimizer TEXT NOT NULL, seed INTEGER NOT NULL,
        status TEXT NOT NULL, n_params BIGINT, tokens BIGINT, final_train_loss DOUBLE, final_val_loss DOUBLE,
        tokens_per_s DOUBLE, seconds DOUBLE, path TEXT, error TEXT, size TEXT, finished_at TIMESTAMP""",
    "training_curves": """
        model_id TEXT NOT NULL, step INTEGER NOT NULL, tokens BIGINT NOT NULL, train_loss DOUBLE, val_loss DOUBLE,
        lr DOUBLE, seconds DOUBLE""",
    "training_documents": """
        split TEXT NOT NULL, doc_id TEXT NOT NULL, role TEXT NOT NULL, recall_quoted BOOLEAN NOT NULL,
        chars INTEGER NOT NULL""",
    "verbatim_recall": """
        model_id TEXT NOT NULL, sample_id TEXT NOT NULL, category TEXT, title TEXT, exact BOOLEAN NOT NULL,
        normalized BOOLEAN NOT NULL, char_distance INTEGER, word_distance INTEGER, char_similarity DOUBLE,
        word_similarity DOUBLE, prefix_words INTEGER, n_words INTEGER, completion TEXT, params_hash TEXT""",
    "extraction": """
        model_id TEXT NOT NULL, split TEXT NOT NULL, text_id TEXT NOT NULL, doc_id TEXT NOT NULL, member BOOLEAN,
        prefix_tokens INTEGER NOT NULL, suffix_tokens INTEGER NOT NULL, exact BOOLEAN NOT NULL,
        matching_prefix INTEGER, token_match_fraction DOUBLE, char_distance INTEGER, char_similarity DOUBLE,
        target_text TEXT, generated_text TEXT""",
    "membership_scores": """
        model_id TEXT NOT NULL, text_id TEXT NOT NULL, doc_id TEXT NOT NULL, member BOOLEAN NOT NULL,
        n_tokens INTEGER, truncated BOOLEAN, score TEXT NOT NULL, value DOUBLE""",
    "membership_auroc": """
        model_id TEXT NOT NULL, score TEXT NOT NULL, labels TEXT NOT NULL, n_members INTEGER, n_nonmembers INTEGER,
        auroc DOUBLE, ci_low DOUBLE, ci_high DOUBLE, tpr_at_1pct_fpr DOUBLE, tpr_at_5pct_fpr DOUBLE, reason TEXT,
        tpr_at_01pct_fpr DOUBLE""",
    # planted ground truth (issue 16): what was planted, each model's scores on it, and the dose-response table
    "planted_items": """
        item_id TEXT NOT NULL, kind TEXT NOT NULL, dose INTEGER NOT NULL, source TEXT, prefix TEXT NOT NULL,
        secret TEXT NOT NULL, answer TEXT, fmt TEXT, chars INTEGER NOT NULL, doc_positions INTEGER[]""",
    "planted_scores": """
        model_id TEXT NOT NULL, run TEXT NOT NULL, optimizer TEXT, seed INTEGER, item_id TEXT NOT NULL,
        kind TEXT NOT NULL, dose INTEGER NOT NULL, secret_tokens INTEGER, greedy_extracted BOOLEAN NOT NULL,
        secret_logprob DOUBLE, p_extract_n DOUBLE, exposure DOUBLE, candidates INTEGER, loss DOUBLE, ref_loss DOUBLE,
        loss_ratio DOUBLE, answer_correct BOOLEAN, answer_loss DOUBLE, completion TEXT""",
    "planted_checkpoint_scores": """
        model_id TEXT NOT NULL, run TEXT NOT NULL, optimizer TEXT, seed INTEGER, step INTEGER NOT NULL, tokens BIGINT,
        val_loss DOUBLE, item_id TEXT NOT NULL, kind TEXT NOT NULL, dose INTEGER NOT NULL,
        greedy_extracted BOOLEAN NOT NULL, secret_logprob DOUBLE, loss DOUBLE""",
    "canary_memorization": """
        optimizer TEXT NOT NULL, seed INTEGER NOT NULL, kind TEXT NOT NULL, dose INTEGER NOT NULL, n INTEGER NOT NULL,
        greedy_extraction DOUBLE, greedy_ci_low DOUBLE, greedy_ci_high DOUBLE, prob_extraction DOUBLE,
        extraction_samples INTEGER, exposure DOUBLE, exposure_ci_low DOUBLE, exposure_ci_high DOUBLE,
        candidates INTEGER, loss DOUBLE, ref_loss DOUBLE, loss_ratio DOUBLE, answer_accuracy DOUBLE,
        answer_loss DOUBLE, model_id TEXT NOT NULL""",
    "planted_detection": """
        eval_set TEXT NOT NULL, sample_id TEXT NOT NULL, item_id TEXT, dose INTEGER, planted BOOLEAN NOT NULL,
        flagged BOOLEAN NOT NULL, flag_reason TEXT, rare_share DOUBLE, contaminated_share DOUBLE, longest_span INTEGER,
        substring_hits INTEGER, ngram_overlap DOUBLE, n_tokens INTEGER""",
    "lr_sweep": """
        optimizer TEXT NOT NULL, seed INTEGER NOT NULL, lr_scale DOUBLE NOT NULL, model_id TEXT NOT NULL,
        source TEXT NOT NULL, final_val_loss DOUBLE, tokens BIGINT, seconds DOUBLE, n_items INTEGER,
        greedy_canary DOUBLE, greedy_fact DOUBLE, top_dose INTEGER""",
    "dataset_inference": """
        model_id TEXT NOT NULL, test TEXT NOT NULL, n_suspect INTEGER, n_validation INTEGER, features TEXT,
        statistic DOUBLE, p_value DOUBLE, reason TEXT""",
    "memorization_comparisons": """
        comparison TEXT NOT NULL, metric TEXT NOT NULL, split TEXT, group_a TEXT NOT NULL, group_b TEXT NOT NULL,
        n_runs_a INTEGER, n_runs_b INTEGER, n_items INTEGER, mean_a DOUBLE, mean_b DOUBLE, diff DOUBLE,
        ci_low DOUBLE, ci_high DOUBLE, welch_p DOUBLE, welch_ci_low DOUBLE, welch_ci_high DOUBLE, matched BOOLEAN,
        note TEXT""",
}

# table -> the asset that writes it (SQL models' dependencies are derived from this and from each other)
OWNERS = {
    "eval_samples": "eval_samples", "rollouts": "rollouts",
    "reference_distances": "eval_proximity", "eval_proximity": "eval_proximity", "eval_neighbors": "eval_proximity",
    "rollout_proximity": "rollout_proximity", "contamination": "contamination", "rollout_spans": "rollout_traces",
    "proximity_correlations": "difficulty_report",
    "cluster_nodes": "cluster_tree", "cluster_members": "cluster_tree", "cluster_names": "cluster_names",
    "annotations": "annotations", "question_clusters": "cluster_report",
    "training_runs": "tiny_models", "training_curves": "tiny_models", "training_documents": "tiny_models",
    "verbatim_recall": "verbatim_recall", "extraction": "extraction", "membership_scores": "membership",
    "membership_auroc": "membership", "memorization_comparisons": "memorization_report",
    "dataset_inference": "membership",
    "planted_items": "tiny_models", "planted_detection": "tiny_models", "lr_sweep": "lr_sweep", "planted_scores": "canary_memorization",
    "planted_checkpoint_scores": "canary_memorization",
    "canary_memorization": "canary_memorization",
}


def ensure(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """Create the tables; add columns a newer schema has to a table an older version created."""
    for t in tables or DDL:
        con.execute(f"CREATE TABLE IF NOT EXISTS {t} ({DDL[t]})")
        have = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                          [t]).fetchall()}
        for col in DDL[t].split(","):
            name, *typ = col.split()
            if name not in have:
                con.execute(f"ALTER TABLE {t} ADD COLUMN {name} {' '.join(w for w in typ if w not in ('NOT', 'NULL'))}")


def replace_rows(con: duckdb.DuckDBPyConnection, table: str, where: dict[str, str], columns: list[str],
                 rows: list[tuple]) -> int:
    """Delete the partition's rows (`where`: column -> value) and insert `rows`, in one transaction."""
    return replace_tables(con, where, {table: (columns, rows)})[table]


def replace_tables(con: duckdb.DuckDBPyConnection, where: dict[str, str],
                   tables: dict[str, tuple[list[str], list[tuple]]]) -> dict[str, int]:
    """`replace_rows` for several tables of one partition (table -> (columns, rows)) in one transaction, so a
    crash never leaves one table new and another old. An empty `where` replaces every row (unpartitioned reports)."""
    ensure(con, *tables)
    cond = " AND ".join(f"{c} = ?" for c in where) or "TRUE"
    con.execute("BEGIN")
    try:
        for table, (columns, rows) in tables.items():
            con.execute(f"DELETE FROM {table} WHERE {cond}", list(where.values()))
            if rows:  # through Arrow: executemany is ~1,000x slower in DuckDB
                batch = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
                con.register("_cprox_rows", batch)
                try:
                    con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM _cprox_rows")
                finally:
                    con.unregister("_cprox_rows")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return {t: len(rows) for t, (_, rows) in tables.items()}


def columns(table: str) -> list[str]:
    """The column names of a report table, in schema order."""
    return [c.split()[0] for c in DDL[table].split(",") if c.strip()]


def replace_named(con: duckdb.DuckDBPyConnection, where: dict[str, str],
                  tables: dict[str, list[dict]]) -> dict[str, int]:
    """`replace_tables` of named rows (table -> dicts keyed by the table's columns), in one transaction."""
    return replace_tables(con, where, {t: (columns(t), [tuple(r[c] for c in columns(t)) for r in rows])
                                       for t, rows in tables.items()})


def ensure_readable(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """On a read-only connection: create missing tables as empty temp views, so readers need no writer first."""
    for t in tables:
        exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [t]).fetchone()[0]
        if not exists:
            con.execute(f"CREATE TEMP TABLE {t} ({DDL[t]})")
