"""SQL report models (dbt_like_sql/, cp_assets.lib.reports.sql_models, their Dagster assets), the `difficulty_report` asset
and `cprox sql`, over a temporary results DuckDB filled with synthetic rows of the fixed report schemas."""

import json
import re
import subprocess
import sys

import dagster as dg
import duckdb
import pytest

from cp_assets.lib.reports.sql_models import SQL_DIR, SqlModelError, discover, header_comment, tables_read
from cp_assets.resources.results import ResultsStore
from cp_assets_tests import report_data


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    return report_data.fill(tmp_path_factory.mktemp("reports") / "results.duckdb")


@pytest.fixture(scope="module")
def materialized(filled):
    """Every SQL model and difficulty_report, materialized once over the synthetic results."""
    from cp_assets.defs.reports.difficulty_report import difficulty_report
    from cp_assets.defs.reports.sql_models import sql_model_assets

    result = dg.materialize(sql_model_assets + [difficulty_report], resources={"results": ResultsStore(
        path=str(filled["db"].path))}, run_config={"ops": {"difficulty_report": {"config": {"n_boot": 200}}}})
    assert result.success
    return result


def query(filled, sql):
    with filled["db"].connect(read_only=True) as con:
        return con.execute(sql).fetchall()


def md(result, asset):
    [ev] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in ev.materialization.metadata.items()}


# -- discovery and dependencies ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,deps", [
    ("contamination_summary", ["contamination"]),
    ("distance_by_difficulty", ["eval_proximity", "eval_samples"]),
    ("nearest_neighbors", ["eval_proximity", "eval_samples"]),
    ("rollout_correctness_by_distance", ["rollout_proximity", "rollouts"]),
])
def test_repo_models_and_their_upstream_assets(name, deps):
    model = discover()[name]
    assert model.path == SQL_DIR / f"{name}.sql" and model.deps == deps
    assert model.description and model.description.endswith(".")  # the header comment


def write(directory, **files):
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / f"{name}.sql").write_text(sql)
    return directory


def test_model_reading_another_model_runs_after_it(tmp_path):
    d = write(tmp_path / "m", b_top="-- top\nSELECT * FROM a_base JOIN eval_samples USING (sample_id)",
              a_base="-- base: one row per item\n-- second line\nWITH x AS (SELECT * FROM eval_proximity)\n"
                     "SELECT sample_id, count(*) AS n FROM x GROUP BY ALL;")
    models = discover(d)
    assert list(models) == ["a_base", "b_top"]
    assert models["b_top"].tables == {"a_base", "eval_samples"}  # USING join: read from the parse tree
    assert models["b_top"].deps == ["a_base", "eval_samples"] and models["b_top"].upstream_models == ["a_base"]
    assert models["a_base"].deps == ["eval_proximity"] and models["a_base"].description == "base: one row per item\n" \
                                                                                           "second line"


@pytest.mark.parametrize("files,match", [
    ({"bad": "SELECT * FROM eval_samples JOIN no_such_table USING (sample_id)"}, r"bad\.sql: reads \['no_such_table'\]"),
    ({"x1": "SELECT * FROM x2", "x2": "SELECT * FROM x3", "x3": "SELECT * FROM x1"}, r"cycle x\d -> x\d -> x\d -> x\d"),
    ({"selfish": "SELECT * FROM selfish"}, r"selfish\.sql: the model reads its own table"),
    ({"eval_proximity": "SELECT 1"}, r"eval_proximity\.sql: 'eval_proximity' is a table written by asset"),
    ({"Bad-Name": "SELECT 1"}, r"Bad-Name\.sql: the file stem"),
    ({"empty": "-- only a comment\n"}, r"empty\.sql: no query"),
    ({"typo": "SELEC * FROM rollouts"}, r"typo\.sql: cannot parse"),
])
def test_planning_errors_name_the_file(tmp_path, files, match):
    with pytest.raises(SqlModelError, match=match):
        discover(write(tmp_path / "m", **files))


def test_tables_read_ignores_ctes_and_table_functions():
    assert tables_read("WITH a AS (SELECT * FROM rollouts) SELECT * FROM a, range(3)") == {"rollouts"}
    assert header_comment("\n-- one\n--two\n\n-- three\nSELECT 1 -- not this") == "one\ntwo\n\nthree"


# -- the assets --------------------------------------------------------------------------------------------------
def test_sql_model_asset_specs():
    from cp_assets.defs.reports.sql_models import sql_model_assets

    by = {a.key.to_user_string(): a for a in sql_model_assets}
    assert set(by) == set(discover())
    a = by["rollout_correctness_by_distance"]
    assert a.group_names_by_key[a.key] == "reports" and a.partitions_def is None
    spec = a.specs_by_key[a.key]
    assert set(spec.kinds) == {"duckdb", "sql"}
    assert {d.asset_key.to_user_string() for d in spec.deps} == {"rollout_proximity", "rollouts"}
    assert spec.description.startswith("Are models more often right")


def test_contamination_summary(filled, materialized):
    m = md(materialized, "contamination_summary")
    assert m["rows"] == 4 and "```sql" in m["sql"] and "| eval_set |" in m["preview"]
    [row] = query(filled, "SELECT n_items, n_flagged, contamination_rate, n_clean, n_not_clean, n_not_dirty, n_dirty, "
                          "substring_hit_rate FROM contamination_summary WHERE eval_set = 'math500' AND split = 'near'")
    assert row == (40, 3, 3 / 40, 34, 6, 37, 3, 5 / 40)
    assert query(filled, "SELECT sum(n_flagged), sum(n_dirty) FROM contamination_summary WHERE split = 'far'") == [(0, 0)]
    # the split's embedded share stands next to its distances (`far` was embedded at an embed_sample rate)
    assert query(filled, "SELECT split, min(embed_share), max(embed_share) FROM contamination_summary GROUP BY split "
                         "ORDER BY split") == [("far", 0.25, 0.25), ("near", 1.0, 1.0)]


def test_distance_by_difficulty(filled, materialized):
    rows = query(filled, "SELECT split, eval_set, difficulty_kind, difficulty, n, mean_min_cosine "
                         "FROM distance_by_difficulty ORDER BY ALL")
    assert md(materialized, "distance_by_difficulty")["rows"] == len(rows) == 2 * (5 + 6)
    math_near = [r for r in rows if r[:3] == ("near", "math500", "level")]
    assert [r[3] for r in math_near] == [1, 2, 3, 4, 5] and {r[4] for r in math_near} == {8}
    means = [r[5] for r in math_near]
    assert means == sorted(means)  # harder is further in `near`
    gsm_far = [r for r in rows if r[:3] == ("far", "gsm8k", "n_steps")]
    assert [r[3] for r in gsm_far] == [2, 3, 4, 5, 6, 7] and [r[5] for r in gsm_far] == sorted(
        [r[5] for r in gsm_far], reverse=True)


def test_nearest_neighbors(filled, materialized):
    assert md(materialized, "nearest_neighbors")["rows"] == 2 * (40 + 30)
    [(question, d, rank, text, share)] = query(filled, "SELECT question, min_cosine, closeness_rank, nn_text, "
                                                       "embed_share FROM nearest_neighbors WHERE sample_id = 'gsm8k:3' "
                                                       "AND split = 'near'")
    assert question == "Janet has 3 ducks." and text == "chunk text near gsm8k:3" and share == 1.0
    assert d == pytest.approx(filled["prox"][("gsm8k:3", "near")])
    closer = sum(v < d for (sid, split), v in filled["prox"].items() if split == "near" and sid.startswith("gsm8k"))
    assert rank == closer + 1


def test_rollout_correctness_by_distance(filled, materialized):
    rows = query(filled, "SELECT split, percentile_bin, bin_low, n, n_graded, accuracy FROM "
                         "rollout_correctness_by_distance WHERE model_id = 'm1' AND eval_set = 'math500' ORDER BY ALL")
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows if r[0] == "near"] == [
        ("near", b, 20 * (b - 1), 8, 8) for b in range(1, 6)]
    correct = {r.sample_id: r.correct for r in filled["rollouts"]}
    for split, b, _, _, _, acc in rows:  # answer percentile of item i is 10 * i % 100
        items = [f"math500:{i}" for i in range(40) if (10 * i % 100) // 20 + 1 == b]
        assert acc == pytest.approx(sum(correct[s] for s in items) / len(items))


def test_difficulty_report_asset(filled, materialized):
    rows = query(filled, "SELECT split, eval_set, variable, model_id, n, rho, ci_low, ci_high FROM "
                         "proximity_correlations")
    got = {r[:4]: r[4:] for r in rows}
    for split, sign in (("near", 1), ("far", -1)):
        n, rho, low, high = got[(split, "math500", "min_cosine_vs_level", None)]
        assert n == 40 and rho * sign > 0 and low <= rho <= high and low * high > 0
        assert got[(split, "gsm8k", "min_cosine_vs_n_steps", None)][1] * sign > 0
        assert got[(split, "math500", "min_cosine_vs_correct", "m1")][1] * sign < 0
        assert (split, "math500", "answer_cosine_vs_correct", "m1") in got
    m = md(materialized, "difficulty_report")
    assert m["correlations_written"] == len(rows) and m["embed_model"] == report_data.EMBED
    assert "harder questions are further from the training data" in m["hypothesis"]
    assert "supports" in m["hypothesis"] and "contradicts" in m["hypothesis"]
    for key in ("distance_by_level_plot", "distance_by_n_steps_plot", "accuracy_by_distance_plot",
                "contamination_plot"):
        assert m[key].startswith("![") and "data:image/png;base64," in m[key]
    assert m["notes"] == "every part ran"


def test_difficulty_report_without_inputs_notes_and_writes_nothing(tmp_path):
    from cp_assets.defs.reports.difficulty_report import difficulty_report

    path = tmp_path / "results.duckdb"
    result = dg.materialize([difficulty_report], resources={"results": ResultsStore(path=str(path))})
    m = md(result, "difficulty_report")
    assert m["correlations_written"] == 0 and "eval_proximity" in m["notes"] and "hypothesis" not in m
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM proximity_correlations").fetchone() == (0,)


def test_sql_model_over_missing_inputs_is_an_empty_table(tmp_path):
    from cp_assets.defs.reports.sql_models import build_sql_model_assets

    assets = build_sql_model_assets(write(tmp_path / "m", base=(SQL_DIR / "contamination_summary.sql").read_text(),
                                          on_top="-- count of the other\nSELECT count(*) AS n FROM base"))
    result = dg.materialize(assets, resources={"results": ResultsStore(path=str(tmp_path / "r.duckdb"))})
    assert md(result, "base")["rows"] == 0 and md(result, "on_top")["rows"] == 1


def test_run_model_replaces_atomically(tmp_path):
    from cp_assets.lib.reports.results_db import ResultsDB
    from cp_assets.lib.reports.sql_models import run_model

    db = ResultsDB(tmp_path / "r.duckdb")
    db.replace_samples("gsm8k", report_data.samples()["gsm8k"])
    d = write(tmp_path / "m", per_steps="SELECT metadata->>'$.n_steps' AS steps, count(*) AS n FROM eval_samples "
                                        "GROUP BY ALL ORDER BY steps")
    run = run_model(db, discover(d)["per_steps"], preview_rows=2)
    assert (run.rows, run.columns, run.preview) == (6, ["steps", "n"], [("2", 5), ("3", 5)])
    broken = write(tmp_path / "m", per_steps="SELECT 1 / 0 AS steps FROM eval_samples WHERE error('boom')")
    with pytest.raises(SqlModelError, match=r"per_steps\.sql: .*boom"):
        run_model(db, discover(broken)["per_steps"])
    with db.connect(read_only=True) as con:  # the failed run left the previous table
        assert con.execute("SELECT count(*) FROM per_steps").fetchone() == (6,)


# -- cprox sql -----------------------------------------------------------------------------------------------------
def cprox_sql(*argv):
    from cp_assets.cli.reports import main

    return main(["sql", *argv])


def test_cprox_sql_table_and_json(filled, capsys):
    db = str(filled["db"].path)
    assert cprox_sql("SELECT sample_id, metadata->>'$.level' AS level FROM eval_samples "
                     "WHERE eval_set = 'math500' ORDER BY row_idx", "--db", db, "--limit", "3") == 0
    captured = capsys.readouterr()
    assert "sample_id" in captured.out and "math500:2" in captured.out and "math500:3" not in captured.out
    assert "first 3 rows shown" in captured.err
    assert cprox_sql("SELECT sample_id, row_idx, 0.5::DOUBLE AS x, 'nan'::DOUBLE AS y FROM eval_samples "
                     "WHERE eval_set = 'gsm8k' ORDER BY row_idx", "--db", db, "--json") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 30
    assert json.loads(lines[1]) == {"sample_id": "gsm8k:1", "row_idx": 1, "x": 0.5, "y": None}


@pytest.mark.parametrize("sql,rc,message", [
    ("DELETE FROM eval_samples", 2, "opened read-only"),
    ("CREATE TABLE t AS SELECT 1", 2, "opened read-only"),
    ("SELECT * FROM no_such_table", 2, "error in the SQL"),
    ("SELEC 1", 2, "error in the SQL"),
])
def test_cprox_sql_refuses_writes_and_bad_sql(filled, capsys, sql, rc, message):
    assert cprox_sql(sql, "--db", str(filled["db"].path)) == rc
    assert message in " ".join(capsys.readouterr().err.split())
    assert query(filled, "SELECT count(*) FROM eval_samples") == [(70,)]


def test_cprox_sql_missing_file_and_exit_status(filled, tmp_path):
    assert cprox_sql("SELECT 1", "--db", str(tmp_path / "none.duckdb")) == 1
    assert not (tmp_path / "none.duckdb").exists()
    proc = subprocess.run([sys.executable, "-m", "cp_assets.cli.reports", "sql", "DROP TABLE rollouts", "--db",
                           str(filled["db"].path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "read-only" in proc.stderr


def parse_records(text: str) -> list[dict[str, str]]:
    """`cprox sql`'s expanded layout (`-[ row N ]` then `column : value` lines) back into rows."""
    rows = []
    for line in text.splitlines():
        if line.startswith("-[ row "):
            rows.append({})
        elif rows and " : " in line:
            col, _, value = line.partition(" : ")
            rows[-1][col.strip()] = value
    return rows


def test_cprox_sql_wide_result_prints_records_in_80_columns(materialized, filled, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    db = str(filled["db"].path)
    assert cprox_sql("SELECT * FROM contamination_summary ORDER BY ALL", "--db", db) == 0
    text = capsys.readouterr().out
    expected = query(filled, "SELECT * FROM contamination_summary ORDER BY ALL")
    with filled["db"].connect(read_only=True) as con:
        columns = [d[0] for d in con.execute("SELECT * FROM contamination_summary").description]
    assert len(columns) == 17 and columns[-1] == "embed_share" and len(expected) >= 2
    got = parse_records(text)
    assert [list(r) for r in got] == [columns] * len(expected)  # every column whole, in order, once per row
    fmt = [["" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row] for row in expected]
    assert [list(r.values()) for r in got] == fmt
    assert max(len(line) for line in text.splitlines()) <= 80
    assert not set("│┃━─┏┡") & set(text), "no box drawing in a file or pipe"


def test_cprox_sql_narrow_result_is_a_plain_table_when_piped(filled, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert cprox_sql("SELECT sample_id, row_idx FROM eval_samples WHERE eval_set = 'math500' ORDER BY row_idx",
                     "--db", str(filled["db"].path), "--limit", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["sample_id", "row_idx"] and set(lines[2]) == {"-", " "}
    assert [line.split() for line in lines[3:]] == [["math500:0", "0"], ["math500:1", "1"]]


DOC_QUERY = re.compile(r'(?:cprox|"\$CPROX") sql "([^"]+)"')


def documented_queries() -> list[tuple[str, str]]:
    """(file, query) for every `cprox sql "..."` in README.md, docs/ and its walk scripts (a query shown cut, with
    `...`, skipped)."""
    root = SQL_DIR.parent
    out = []
    docs = sorted((root / "docs").glob("*.md")) + sorted((root / "docs").glob("walks/*.sh"))
    for path in [root / "README.md", *docs]:
        for query in DOC_QUERY.findall(path.read_text()):
            if "..." not in query:
                out.append((path.name, query))
    return out


def test_every_query_in_the_docs_runs_against_the_results_schema(tmp_path):
    """The docs' `cprox sql` examples bind against the real schema: every asset's table and every SQL model, empty
    (a renamed column in a doc is a binder error here, not a reader's)."""
    from cp_assets.lib.reports import report_tables
    from cp_assets.lib.reports.results_db import ResultsDB
    from cp_assets.lib.reports.sql_models import run_model

    queries = documented_queries()
    assert len(queries) >= 10 and {"lab_corpus.md", "lab_corpus.sh", "README.md"} <= {name for name, _ in queries}
    db = ResultsDB(tmp_path / "results.duckdb")
    with db.connect() as con:
        report_tables.ensure(con)
    for model in discover().values():
        run_model(db, model)
    with db.connect(read_only=True) as con:
        for name, query in queries:
            try:
                con.execute(query).fetchall()
            except duckdb.Error as exc:
                raise AssertionError(f"{name}: cprox sql {query!r}: {exc}") from None


def test_the_sql_readme_lists_every_model_and_what_it_reads():
    readme = (SQL_DIR / "README.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)\.sql` \|.*\| ([^|]+) \|$", readme, re.M)}
    models = discover()
    assert sorted(rows) == sorted(models)
    for name, model in models.items():
        assert set(re.findall(r"`(\w+)`", rows[name])) >= set(model.tables), name
