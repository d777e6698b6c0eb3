"""Every script in benchmarks/ starts and prints its usage on this project's Python (3.11): they run by hand, rarely,
so a syntax only a newer Python accepts (an f-string reusing its quote, 3.12+) or a broken import went unnoticed."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def test_the_benchmarks_folder_is_found():
    assert {"shards.py", "ingest.py", "search.py", "load.py", "train.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_prints_its_usage(script):
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                         cwd=BENCHMARKS.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"usage: {script.name}"), out.stdout[:500]
