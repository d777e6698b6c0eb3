"""The layout holds by test, not by hope: the import contracts of pyproject.toml ([tool.importlinter]: lib never
imports dagster, defs, resources or cli; domain layers; no cycles), every CPROX_* variable read in
lib/core/settings.py alone, small lib folders, and one defs file per asset named after it."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "cp_assets"


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "5 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("leak, target", [
    ("import dagster\n", "dagster"),
    ("def f():\n    from dagster import asset\n", "dagster"),  # a lazy import inside a function
    ("def f():\n    import dagster_k8s\n", "dagster_k8s"),
], ids=["top-level", "lazy", "dagster-k8s"])
def test_a_broken_contract_is_reported(tmp_path, leak, target):
    """The contract can fail: a lib module that imports dagster (at the top, lazily, or one of its libraries)
    breaks it (checked on a copy of the package)."""
    import shutil

    shutil.copytree(PKG, tmp_path / "cp_assets", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "cp_assets" / "lib" / "core" / "leak.py").write_text('"""A planted violation."""\n' + leak)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tmp_path), "PATH": str(Path(sys.executable).parent)})
    assert proc.returncode == 1
    assert f"cp_assets.lib.core.leak -> {target}" in proc.stdout


def test_lib_never_imports_dagster_by_name_at_run_time():
    """What import-linter cannot see: `importlib.import_module("dagster...")` or `__import__("dagster...")`."""
    dynamic = []
    for path in (PKG / "lib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] in ("import_module", "__import__") \
                    and node.args and isinstance(node.args[0], ast.Constant) \
                    and str(node.args[0].value).startswith("dagster"):
                dynamic.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert dynamic == []


def _env_reads(tree: ast.AST) -> list[str]:
    """String literals starting with CPROX_ passed to os.environ.get / os.getenv / os.environ[...]."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = ast.unparse(node.func)
            if f in ("os.environ.get", "os.getenv", "environ.get", "getenv", "os.environ.setdefault"):
                found.append(node.args[0].value)
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and ast.unparse(node.value) in ("os.environ", "environ") and isinstance(node.slice, ast.Constant):
            found.append(node.slice.value)
    return [v for v in found if isinstance(v, str) and v.startswith("CPROX_")]


def test_cprox_variables_are_read_in_settings_alone():
    """Nothing but settings.py reads a CPROX_ variable, in the package or the benchmarks (which may set them for the
    code they run: a write is not a read)."""
    settings = PKG / "lib" / "core" / "settings.py"
    readers = {p.relative_to(REPO).as_posix(): _env_reads(ast.parse(p.read_text()))
               for p in [*PKG.rglob("*.py"), *(REPO / "benchmarks").glob("*.py")] if p != settings}
    assert {k: v for k, v in readers.items() if v} == {}
    assert _env_reads(ast.parse('os.environ["CPROX_HOME"] = "x"\nos.environ.get("CPROX_X")')) == ["CPROX_X"]
    assert len(_env_reads(ast.parse(settings.read_text()))) >= 5  # the check sees the reads where they are


@pytest.mark.parametrize("folder", sorted(p for p in (PKG / "lib").rglob("*") if p.is_dir()
                                          and p.name != "__pycache__"), ids=lambda p: p.name)
def test_lib_folders_stay_small(folder):
    modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= 15, f"{folder}: {len(modules)} modules"


def test_every_module_opens_with_a_docstring():
    """In the package, the tests and the benchmarks: each module says what it is for (empty __init__ files aside)."""
    modules = [*PKG.rglob("*.py"), *(REPO / "cp_assets_tests").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    missing = [p.relative_to(REPO).as_posix() for p in modules
               if p.stat().st_size and ast.get_docstring(ast.parse(p.read_text())) is None]
    assert len(modules) > 200 and missing == []


def test_package_modules_stay_readable():
    """The guide is ~400 lines a module; past 450 a module is split (the benchmarks, scripts run by hand, may run
    longer)."""
    long = {p.relative_to(REPO).as_posix(): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_a_defs_file_is_named_after_its_asset():
    """Each asset is defined in defs/<domain>/<asset name>.py (SQL models: defs/reports/sql_models.py)."""
    import inspect

    from cp_assets.definitions import defs

    wrong = {}
    for a in defs.assets:
        name = a.key.to_user_string()
        if a.op.name.startswith("sql_") or "dbt_like_sql" in str(a.metadata_by_key.get(a.key, {})):
            continue
        src = Path(inspect.getsourcefile(a.op.compute_fn.decorated_fn)).relative_to(PKG)
        if src.parts[0] != "defs" or src.stem != name:
            wrong[name] = src.as_posix()
    assert wrong == {}


SQL_OR_MARKDOWN = ("SELECT ", "INSERT ", "DELETE FROM", "UPDATE ", "CREATE TABLE", "|---", "| ---")


def test_defs_hold_no_sql_and_no_markdown_building():
    """Asset bodies call lib: SQL lives in lib (or dbt_like_sql/), markdown tables are rendered by lib."""
    found = {}
    for path in (PKG / "defs").rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings \
                    and any(k in node.value for k in SQL_OR_MARKDOWN):
                found.setdefault(path.relative_to(REPO).as_posix(), []).append(node.value[:60])
    assert found == {}


def test_loading_the_definitions_imports_no_torch():
    """GPU boundary: torch, vllm, sentence-transformers and transformers are imported only inside the steps that use
    them (encoder, generation backends, scoring, the tiny GPT), never by loading the code location or the CLI."""
    code = ("import sys, cp_assets.definitions, cp_assets.cli.main; "
            "print(sorted(m for m in ('torch', 'vllm', 'sentence_transformers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_setting_is_listed_where_people_look():
    """Each CPROX_ variable settings.py reads is in its docstring, in VARIABLES and in docs/operations.md's table."""
    import re

    from cp_assets.lib.core import settings

    source = (PKG / "lib" / "core" / "settings.py").read_text()
    doc = ast.get_docstring(ast.parse(source))
    used = set(re.findall(r"CPROX_[A-Z_]+", source.replace(doc, "")))
    table = set(re.findall(r"^\| `(CPROX_[A-Z_]+)`", (REPO / "docs" / "operations.md").read_text(), re.M))
    assert len(used) >= 20
    assert used - set(re.findall(r"CPROX_[A-Z_]+", doc)) == set()
    assert used == settings.VARIABLES and used - table == set()

