"""`cprox` tables (cp_assets/cli/tables.py) in an 80-column terminal (a real pty) and in a pipe: a box table only
where it fits a terminal, plain aligned text in a pipe, one record per row when the columns do not fit."""

import os
import pty

import pytest

from cp_assets.cli.tables import show, yes_no

NARROW = (["split", "ok", "chunks"], [["tiny", yes_no(True), "120"], ["math", yes_no(False), "7"]])
WIDE = ([f"column_{i}" for i in range(16)], [[f"{i * 1.5:.6g}" for i in range(16)]])


@pytest.fixture
def terminal(monkeypatch):
    """The slave side of a pseudo-terminal, 80 columns wide, and a reader of what was written to it."""
    monkeypatch.setenv("COLUMNS", "80")
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", encoding="utf-8")

    def read() -> str:
        stream.flush()
        return os.read(master, 1 << 16).decode("utf-8", "replace")

    yield stream, read
    stream.close()
    os.close(master)


def test_fitting_table_is_a_box_on_a_terminal(terminal):
    stream, read = terminal
    assert show(*NARROW, title="t", file=stream) == "box"
    text = read()
    assert "┃" in text and "tiny" in text and "NO" in text


def test_wide_table_is_records_on_a_terminal(terminal):
    stream, read = terminal
    assert show(*WIDE, file=stream) == "records"
    lines = [line.rstrip("\r") for line in read().splitlines()]
    assert "column_15 : 22.5" in lines and "column_0  : 0" in lines
    assert max(len(line) for line in lines) <= 80


def test_pipe_gets_plain_text(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert show(*NARROW, title="t") == "plain"
    assert capsys.readouterr().out.splitlines() == ["t", "split    ok      chunks", "-------  ----  --------",
                                                     "tiny     yes        120", "math     NO           7"]
    assert show(*WIDE) == "records"
    out = capsys.readouterr().out
    assert out.count("-[ row 1 ]") == 1 and "column_3  : 4.5" in out.splitlines()
    assert show(["a"], []) == "plain" and "(0 rows)" in capsys.readouterr().out
