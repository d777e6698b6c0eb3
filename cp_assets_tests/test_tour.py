"""`cprox tour` (the last step of `make demo`): 80 columns, the UI address, five commands that `cprox` accepts, and
row counts read from a real results DuckDB."""

import shlex

import duckdb

from cp_assets.cli.main import build_parser
from cp_assets.cli.tour import COMMANDS, MADE, UI_ADDRESS, table_counts, tour_text


def test_tour_fits_80_columns_and_names_the_ui_and_five_commands(tmp_path):
    path = tmp_path / "results.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE rollouts AS SELECT range AS i FROM range(404)")
        con.execute("CREATE TABLE contamination AS SELECT range AS i FROM range(1234567)")
    counts = table_counts(path)
    assert counts["rollouts"] == 404 and counts["contamination"] == 1234567 and counts["cluster_names"] is None
    text = tour_text(counts, path)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert UI_ADDRESS in text and "1,234,567  contamination" in text and "cluster_names (not made yet)" in text
    assert len(COMMANDS) == 5 and all(f"{n}. cprox " in text for n in range(1, 6))
    assert {table for _, table in MADE} >= {"rollouts", "contamination", "membership_scores"}


def test_every_tour_command_parses():
    parser = build_parser()
    parsed = [parser.parse_args(shlex.split(step.command)) for step in COMMANDS]  # SystemExit on a renamed flag
    assert [(a.command, a.fn.__name__) for a in parsed] == [
        ("trace", "cmd_trace"), ("search", "cmd_search"), ("sql", "cmd_sql"), ("annotate", "cmd_annotate"),
        ("sql", "cmd_sql")]
    assert (parsed[0].text, parsed[0].split) == ("Shall I compare thee to a summer's day", ["pretrain"])
    assert (parsed[1].split, parsed[1].k) == ("midtrain", 3) and parsed[3].tree == "all"
    assert "FROM contamination_summary" in parsed[2].query and "FROM optimizer_memorization" in parsed[4].query


def test_tour_without_a_results_db_says_what_to_run(tmp_path):
    text = tour_text(table_counts(tmp_path / "none.duckdb"), tmp_path / "none.duckdb", width=60)
    assert "Run `make demo` first" in " ".join(text.split()) and max(len(line) for line in text.splitlines()) <= 60
