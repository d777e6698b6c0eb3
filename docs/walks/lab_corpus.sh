#!/usr/bin/env bash
# "Running on a lab corpus" (docs/lab_corpus.md) end to end in a private home: a directory of Parquet shards (the 150
# FineWeb-Edu sample pages, 12 GSM8K test items planted in them) -> shard partitions over 2 worker processes ->
# contamination of GSM8K's first 100 test questions against the split -> the table, with DuckDB SQL.
#   CPROX_DATA_DIR=../shared/data bash docs/walks/lab_corpus.sh [WORKDIR]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
W=${1:-$(mktemp -d /tmp/cprox_lab_walk.XXXX)}
mkdir -p "$W"
export CPROX_DATA_DIR=${CPROX_DATA_DIR:-$REPO/../shared/data}
export CPROX_HOME=$W/home DAGSTER_HOME=$W/home/dagster_home CPROX_CORPORA=$W/corpora.yaml CPROX_EVALS=$W/evals.yaml
export HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore
mkdir -p "$DAGSTER_HOME" && cp "$REPO/dagster.yaml" "$DAGSTER_HOME/"
PY=$REPO/.venv/bin/python CPROX=$REPO/.venv/bin/cprox

# 1. the lab's shards: four Parquet files with a `text` and an `id` column, row groups of 10 rows
"$PY" - "$W/parquet" <<'PYEOF'
import gzip, json, os, sys
import pyarrow as pa, pyarrow.parquet as pq
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
data = os.environ["CPROX_DATA_DIR"]
pages = [json.loads(l) for l in gzip.open(f"{data}/fineweb_edu_sample/fineweb_edu_sample10bt_150.jsonl.gz", "rt")]
tests = [json.loads(l) for _, l in zip(range(12), gzip.open(f"{data}/gsm8k/test.jsonl.gz", "rt"))]
for i, t in enumerate(tests):  # planted: GSM8K test items 0..11, question and answer, inside pages 40, 43, ...
    p = pages[40 + 3 * i]
    p["text"] = p["text"][:800] + f"\n\nPractice problem. {t['question']}\nSolution: {t['answer']}\n\n" + p["text"][800:]
for f in range(4):
    rows = pages[38 * f: 38 * (f + 1)]
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]}),
                   f"{out}/{f:03d}_00000.parquet", row_group_size=10)
print(f"wrote 4 Parquet files, {len(pages)} pages, 12 GSM8K test items planted, to {out}")
PYEOF

# 2. the registries: one split over the directory (a file a shard), and GSM8K's first 100 test questions
cat > "$CPROX_CORPORA" <<YAML
splits:
  web:
    description: a lab's pretraining shards (here the FineWeb-Edu sample as 4 Parquet files)
    shard_bytes: 150000
    sources:
      - path: $W/parquet/
        name: web
        text_field: text
        id_field: id
YAML
cat > "$CPROX_EVALS" <<YAML
evals:
  gsm8k:
    kind: gsm8k
    path: gsm8k/test.jsonl.gz
    limit: 100
    prompt_template: "{question}"
YAML

set -x
"$CPROX" shards plan
time "$CPROX" materialize --split web --workers 2 --log-level WARNING
"$CPROX" summary
time "$CPROX" reports --eval gsm8k --split web --log-level WARNING
"$CPROX" sql "SELECT sample_id, ngram_overlap, round(contaminated_share, 3) AS share, longest_span, bucket, flag_reason FROM contamination WHERE flagged ORDER BY sample_id"
"$CPROX" sql "SELECT * FROM contamination_summary"
"$CPROX" db stop
