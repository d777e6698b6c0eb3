"""The shard planner: a split cut into shards (files packed, large Parquet files cut by row groups) whose documents,
read shard by shard, are exactly the split's; fingerprints that move only for the shards that changed."""

import os

import pytest
import yaml

from cp_assets.lib.core import settings
from cp_assets.lib.corpus.registry import load_registry
from cp_assets.lib.corpus.shards import plan_shards, read_shard
from cp_assets.lib.corpus.sources import ReadStats, read_split
from cp_assets_tests.test_lab_formats import rows, write_parquet, write_zst
from cp_assets_tests.test_sources import write_jsonl


def registry(tmp_path, sources, shard_bytes):
    path = tmp_path / "corpora.yaml"
    path.write_text(yaml.safe_dump({"splits": {"s": {"sources": sources, "shard_bytes": shard_bytes}}}))
    return load_registry(path, tmp_path)


def shard_docs(reg, split="s"):
    return [[(d.doc_id, d.text, d.locator) for d in read_shard(reg, shard)] for shard in plan_shards(reg, split)]


@pytest.fixture
def lab_dir(tmp_path):
    """Four Parquet shards (one of 6 row groups, larger than the others), a zstd export and a gzip JSONL file."""
    for i in range(3):
        write_parquet(tmp_path / "web" / f"part_{i:03d}.parquet", rows(6, start=10 * i), row_group_size=3)
    write_parquet(tmp_path / "web" / "part_003.parquet", rows(60, start=100), row_group_size=10)
    write_zst(tmp_path / "chat.jsonl.zst", [{"q": f"q{i}", "a": f"a{i}"} for i in range(5)])
    write_jsonl(tmp_path / "notes.jsonl.gz", [{"text": f"note {i}"} for i in range(4)])
    return tmp_path


SOURCES = [{"path": "web/", "text_field": "text", "meta_fields": ["url"]},  # positional ids: part_003.parquet/<row>
           {"path": "chat.jsonl.zst", "template": "{q} {a}"},
           {"path": "notes.jsonl.gz", "text_field": "text", "limit": 3}]


def test_shards_read_exactly_the_split_in_order(lab_dir):
    big = (lab_dir / "web" / "part_003.parquet").stat().st_size
    reg = registry(lab_dir, SOURCES, shard_bytes=big // 3)
    plan = plan_shards(reg, "s")
    assert [s.key for s in plan] == [f"{i:05d}" for i in range(len(plan))] and len(plan) >= 5
    sliced = [p for s in plan for p in s.pieces if p.row_groups]
    # the large file is cut into whole row groups that cover it once, in order
    assert [p.row_groups for p in sliced][0][0] == 0 and sliced[-1].row_groups[1] == 6
    assert all(a.row_groups[1] == b.row_groups[0] for a, b in zip(sliced, sliced[1:])) and len(sliced) >= 2
    whole = [(d.doc_id, d.text, d.locator) for d in read_split(reg, "s", ReadStats())]
    by_shard = shard_docs(reg)
    assert [d for docs in by_shard for d in docs] == whole
    assert len(whole) == 18 + 60 + 5 + 3 and all(by_shard)
    # a slice's positional ids are the file's row numbers, as read whole
    assert ("web:part_003.parquet/59", "document 159 " * 20) in [(i, t) for i, t, _ in whole]


def test_small_split_is_one_shard_and_the_demo_splits_read_the_same(lab_dir):
    reg = registry(lab_dir, SOURCES, shard_bytes=1 << 30)
    [shard] = plan_shards(reg, "s")
    assert [p.source for p in shard.pieces] == ["web"] * 4 + ["chat", "notes"]
    demo = load_registry(settings.REPO_ROOT / "demo" / "corpora.yaml")
    for split in demo.names():
        [only] = plan_shards(demo, split)
        assert [d.doc_id for d in read_shard(demo, only)] == [d.doc_id for d in read_split(demo, split)]


def test_sources_that_must_be_read_whole_are_not_cut(lab_dir):
    write_parquet(lab_dir / "books.parquet", [{"book": f"b{i // 20}", "text": f"verse {i}"} for i in range(60)],
                  row_group_size=10)
    size = (lab_dir / "books.parquet").stat().st_size
    for extra in ({"group_by": ["book"]}, {"where": {"book": ["b1"]}}, {"limit": 50}):
        reg = registry(lab_dir, [{"path": "books.parquet", "text_field": "text"} | extra], shard_bytes=size // 4)
        [shard] = plan_shards(reg, "s")
        assert shard.pieces[0].row_groups is None, extra
    reg = registry(lab_dir, [{"path": "books.parquet", "text_field": "text", "id_field": "book",
                              "where": {"book": ["b1"]}, "on_bad_record": "skip"}], shard_bytes=size // 4)
    assert len(plan_shards(reg, "s")) > 1  # ids from a field: filtering does not shift them


def test_a_new_file_changes_only_the_last_shards(lab_dir):
    size = (lab_dir / "web" / "part_000.parquet").stat().st_size
    reg = registry(lab_dir, [SOURCES[0]], shard_bytes=int(size * 1.5))
    before = {s.key: s.fingerprint() for s in plan_shards(reg, "s")}
    write_parquet(lab_dir / "web" / "part_004.parquet", rows(6, start=500), row_group_size=3)
    after = {s.key: s.fingerprint() for s in plan_shards(reg, "s")}
    changed = sorted(k for k in after if before.get(k) != after[k])
    assert changed == [max(after)] and set(before) <= set(after)
    # rewriting a file moves its shard's fingerprint and no other
    target = lab_dir / "web" / "part_001.parquet"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    moved = {s.key: s.fingerprint() for s in plan_shards(reg, "s")}
    [key] = [k for k in moved if moved[k] != after[k]]
    assert any(p.path == str(target) for p in plan_shards(reg, "s")[int(key)].pieces)


def test_a_shard_step_plans_only_up_to_its_shard_and_reads_each_footer_once(lab_dir, monkeypatch):
    """What one shard step computes (`planned_shard`, as `read_corpus` does) is the whole plan's shard; the plan
    stops at that shard, and a Parquet footer is read once per process for one path, size and mtime, however many
    steps plan the file; a rewritten file is read again. One listing gives the plan and the fingerprint alike."""
    from cp_assets.lib.corpus import shards

    for i in range(3):
        write_parquet(lab_dir / "big" / f"b{i}.parquet", rows(60, start=1000 * i), row_group_size=10)
    size = (lab_dir / "big" / "b0.parquet").stat().st_size
    reg = registry(lab_dir, [{"path": "big/", "text_field": "text"}], shard_bytes=size // 3)
    read, real = [], shards.parquet_row_group_bytes
    monkeypatch.setattr(shards, "parquet_row_group_bytes", lambda path: read.append(path.name) or real(path))
    shards._row_group_slices.cache_clear()
    first, before = shards.planned_shard(reg, "s", "00000")
    assert before == 0 and read == ["b0.parquet"]  # the first shard needs the first file's footer alone
    plan = shards.plan_shards(reg, "s")
    assert len(plan) >= 6 and first == plan[0] and read == ["b0.parquet", "b1.parquet", "b2.parquet"]
    for shard in plan:
        assert shards.planned_shard(reg, "s", shard.key) == (shard, shard.index)
    assert shards.planned_shard(reg, "s", shards.shard_key(len(plan))) == (None, len(plan))  # past the plan
    assert len(read) == 3  # every later step planned from the kept footers
    target = lab_dir / "big" / "b1.parquet"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert [s.key for s in shards.plan_shards(reg, "s")] == [s.key for s in plan] and read[3:] == ["b1.parquet"]
    listing = shards.list_split(reg, "s")
    assert shards.split_sources(reg, "s", listing=listing) == shards.split_sources(reg, "s")
    assert list(shards.iter_shards(reg, "s", listing)) == shards.plan_shards(reg, "s")
