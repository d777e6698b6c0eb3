"""Lab corpus formats: Parquet read by row group, zstd JSONL, directories and globs of shards, and the errors each
format gives for bad input (file, row group or line, and field named); the registry entries of docs/corpus.md."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cp_assets.lib.core import settings
from cp_assets.lib.corpus.formats import zstd
from cp_assets.lib.corpus.registry import Registry, RegistryError, load_registry
from cp_assets.lib.corpus.sources import BadRecord, ReadStats, read_split
from cp_assets_tests.test_sources import make_registry, read, write_jsonl


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"d{i}", "text": f"document {i} " * 20, "url": f"https://x/{i}", "score": i / 10, "junk": i}
            for i in range(start, start + n)]


def write_parquet(path: Path, records: list[dict], row_group_size: int = 4, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size, **kw)
    return path


def write_zst(path: Path, records: list, frames: int = 1) -> Path:
    raw = [json.dumps(r).encode() + b"\n" if not isinstance(r, bytes) else r + b"\n" for r in records]
    step = -(-len(raw) // frames)
    path.write_bytes(b"".join(zstd.compress(b"".join(raw[i:i + step])) for i in range(0, len(raw), step)))
    return path


def test_parquet_rows_by_row_group_with_ids_meta_and_locators(tmp_path):
    write_parquet(tmp_path / "web.parquet", rows(10))
    docs, stats = read(tmp_path, {"path": "web.parquet", "text_field": "text", "id_field": "id",
                                  "meta_fields": ["url", "score", "absent"]})
    assert [d.doc_id for d in docs] == [f"web:d{i}" for i in range(10)]
    assert docs[5].text == "document 5 " * 20 and docs[5].meta == {"url": "https://x/5", "score": 0.5}
    # 4 rows a row group: row 5 is in row group 1; rows count from the start of the file
    assert docs[5].locator == f"{tmp_path / 'web.parquet'}:row_group=1:row=5" and docs[5].byte_offset == -1
    assert stats.documents == 10 and stats.skipped == {}


def test_parquet_positional_ids_template_group_by_exclude_and_limit(tmp_path):
    write_parquet(tmp_path / "qa.parquet", [{"q": f"q{i}", "a": f"a{i}", "book": "B" if i < 3 else "C"}
                                            for i in range(6)], row_group_size=2)
    docs, _ = read(tmp_path, {"path": "qa.parquet", "template": "Q: {q}\nA: {a}"})
    assert [(d.doc_id, d.text) for d in docs][:2] == [("qa:0", "Q: q0\nA: a0"), ("qa:1", "Q: q1\nA: a1")]
    assert len(docs) == 6
    docs, _ = read(tmp_path, {"path": "qa.parquet", "text_field": "q", "group_by": ["book"], "joiner": " "})
    assert [(d.doc_id, d.text) for d in docs] == [("qa:B", "q0 q1 q2"), ("qa:C", "q3 q4 q5")]
    write_parquet(tmp_path / "held.parquet", [{"problem": "q1"}, {"problem": "q4"}])
    docs, stats = read(tmp_path, {"path": "qa.parquet", "text_field": "q", "limit": 3,
                                  "exclude": {"path": "held.parquet", "field": "problem", "key": "q"}})
    assert [d.text for d in docs] == ["q0", "q2", "q3"] and stats.excluded == 1


def test_parquet_null_and_non_string_text_name_row_group_row_and_field(tmp_path):
    records = rows(8)
    records[6]["text"] = None
    path = write_parquet(tmp_path / "n.parquet", records)
    src = {"path": path.name, "text_field": "text", "id_field": "id"}
    with pytest.raises(BadRecord) as exc:
        read(tmp_path, src)
    assert str(exc.value) == f"{path}:row_group=1:row=6: field 'text' is null"
    docs, stats = read(tmp_path, src | {"on_bad_record": "skip"})
    assert len(docs) == 7 and stats.skipped == {"missing_field": 1}
    path = write_parquet(tmp_path / "i.parquet", [{"id": 1, "body": 7}])
    with pytest.raises(BadRecord, match=r"i.parquet:row_group=0:row=0: field 'body' is int, not a string"):
        read(tmp_path, {"path": path.name, "text_field": "body"})


def test_parquet_missing_column_names_file_column_and_what_it_has(tmp_path):
    path = write_parquet(tmp_path / "m.parquet", rows(3))
    with pytest.raises(BadRecord) as exc:
        read(tmp_path, {"path": path.name, "text_field": "content", "id_field": "id"})
    message = str(exc.value)
    assert message.startswith(f"{path}: column 'content' is missing") and exc.value.reason == "missing_column"
    assert "['id', 'junk', 'score', 'text', 'url']" in message
    with pytest.raises(BadRecord, match="column 'title' is missing"):
        read(tmp_path, {"path": path.name, "template": "{title}\n{text}"})
    # skip: the file is skipped whole, counted, and said in the warnings; the next shard is still read
    write_parquet(tmp_path / "shards" / "a.parquet", rows(3))
    write_parquet(tmp_path / "shards" / "b.parquet", [{"content": "other schema"}])
    docs, stats = read(tmp_path, {"path": "shards/", "text_field": "content", "on_bad_record": "skip"})
    assert [d.doc_id for d in docs] == ["shards:b.parquet/0"] and stats.skipped == {"missing_column": 1}
    assert stats.warnings == [f"{tmp_path / 'shards' / 'a.parquet'}: column 'content' is missing (needed by the "
                              "source's text_field/template/id_field/group_by); the file has columns "
                              "['id', 'junk', 'score', 'text', 'url']"]


def test_corrupt_parquet_footer_and_row_group(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", rows(12), compression="NONE")
    whole = path.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    for on_bad in ("error", "skip"):  # a file that cannot be read is never skipped in silence
        with pytest.raises(BadRecord) as exc:
            read(tmp_path, {"path": "cut.parquet", "text_field": "text", "on_bad_record": on_bad})
        assert str(exc.value).startswith(f"{tmp_path / 'cut.parquet'}: not a readable Parquet file")
    # a damaged page header in row group 1 of 3: rows of row group 0 come out, then the error names row group 1
    column = pq.ParquetFile(path).metadata.row_group(1).column(1)
    offset = column.dictionary_page_offset or column.data_page_offset
    damaged = bytearray(whole)
    damaged[offset:offset + 16] = b"\xff" * 16
    (tmp_path / "bad.parquet").write_bytes(bytes(damaged))
    reg = load_registry(make_registry(tmp_path, {"s": {"sources": [{"path": "bad.parquet", "text_field": "text"}]}}),
                        tmp_path)
    seen = []
    with pytest.raises(BadRecord) as exc:
        for doc in read_split(reg, "s"):
            seen.append(doc.doc_id)
    assert seen == ["bad:0", "bad:1", "bad:2", "bad:3"]
    assert str(exc.value).startswith(f"{tmp_path / 'bad.parquet'}:row_group=1: row group 1 of 3 cannot be read")


def test_empty_parquet_is_an_empty_file(tmp_path):
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "e.parquet")
    with pytest.raises(BadRecord) as exc:
        read(tmp_path, {"path": "e.parquet", "text_field": "text"})
    assert exc.value.reason == "empty_file"


@pytest.mark.parametrize("name", ["chat.jsonl.zst", "chat.zst", "chat.json.zstd"])
def test_zstd_jsonl_reads_like_jsonl_across_frames(tmp_path, name):
    records = [{"id": i, "text": f"zstd document {i}"} for i in range(50)]
    write_jsonl(tmp_path / "plain.jsonl", records)
    write_zst(tmp_path / name, records, frames=3)
    plain, _ = read(tmp_path, {"path": "plain.jsonl", "text_field": "text", "name": "x"})
    docs, _ = read(tmp_path, {"path": name, "text_field": "text", "name": "x"})
    assert [(d.doc_id, d.text, d.byte_offset) for d in docs] == [(d.doc_id, d.text, d.byte_offset) for d in plain]
    assert docs[7].locator == f"{tmp_path / name}:8"


def test_zstd_bad_line_truncated_and_garbage_streams(tmp_path):
    path = write_zst(tmp_path / "bad.jsonl.zst", [{"text": "ok"}, b'{"text": "unterminated'])
    with pytest.raises(BadRecord, match=re.escape(f"{path}:2: malformed JSON")):
        read(tmp_path, {"path": path.name, "text_field": "text"})
    whole = write_zst(tmp_path / "t.jsonl.zst", [{"text": f"doc {i} " * 50} for i in range(2000)]).read_bytes()
    (tmp_path / "cut.jsonl.zst").write_bytes(whole[: len(whole) // 2])
    reg = load_registry(make_registry(tmp_path, {"s": {"sources": [
        {"path": "cut.jsonl.zst", "text_field": "text", "on_bad_record": "skip"}]}}), tmp_path)
    seen = 0
    with pytest.raises(BadRecord) as exc:
        for _ in read_split(reg, "s"):
            seen += 1
    assert 0 < seen < 2000 and exc.value.reason == "unreadable"
    assert re.match(re.escape(str(tmp_path / "cut.jsonl.zst")) + r":\d+: read failed after byte \d+ .*ended before",
                    str(exc.value))
    (tmp_path / "junk.zst").write_bytes(b"this is not zstd " * 20)
    with pytest.raises(BadRecord, match=re.escape(f"{tmp_path / 'junk.zst'}: cannot read the file")):
        read(tmp_path, {"path": "junk.zst", "text_field": "text"})


def test_directory_and_glob_shards_in_name_order(tmp_path):
    shards = tmp_path / "crawl"
    write_parquet(shards / "shard_00001.parquet", rows(3, start=3))
    write_parquet(shards / "shard_00000.parquet", rows(3))
    write_parquet(shards / "2024" / "shard_00002.parquet", rows(2, start=6))  # nested: relative path order
    (shards / "_SUCCESS").write_text("")
    (shards / ".shard_00000.parquet.crc").write_bytes(b"\x00crc")
    (shards / "README").write_text("not a shard")
    for path in ("crawl/", "crawl"):  # with or without the trailing slash
        docs, _ = read(tmp_path, {"path": path, "text_field": "text", "name": "crawl"})
        assert [d.doc_id for d in docs] == ["crawl:shard_00002.parquet/0", "crawl:shard_00002.parquet/1"] + [
            f"crawl:shard_0000{s}.parquet/{r}" for s in (0, 1) for r in range(3)]
    docs, _ = read(tmp_path, {"path": "crawl/shard_*.parquet", "text_field": "text", "id_field": "id"})
    assert [d.doc_id for d in docs] == [f"crawl:d{i}" for i in range(6)]
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(RegistryError, match="directory .*empty_dir has no data file"):
        read(tmp_path, {"path": "empty_dir/", "text_field": "text"})


def test_registry_formats_and_fields():
    parse = lambda src: Registry.model_validate({"splits": {"s": {"sources": [src]}}}).splits["s"].sources[0]
    assert parse({"path": "a.parquet", "text_field": "t"}).resolved_format() == "parquet"
    assert parse({"path": "a.jsonl.zst", "text_field": "t"}).resolved_format() == "jsonl"
    assert parse({"path": "a.txt.zst"}).resolved_format() == "text"
    assert parse({"path": "dir/", "text_field": "t"}).resolved_format() is None
    src = parse({"path": "a.parquet", "template": "{q} {a.b} {c[0]}", "id_field": "id", "meta_fields": ["m", "q"],
                 "where": {"lang": ["en"]}})
    assert src.record_fields() == (["q", "a", "c", "id"], ["m", "lang"])
    with pytest.raises(ValueError, match="Parquet"):
        parse({"path": "a.parquet"})


def _docs_registries() -> list[dict]:
    text = (settings.REPO_ROOT / "docs" / "corpus.md").read_text()
    section = text.split("## Lab corpora", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def test_docs_lab_registries_read_their_layouts(tmp_path):
    """Each registry entry of docs/corpus.md's lab section, over the file layout it describes."""
    nanochat, fineweb, dolma = _docs_registries()
    for i in range(3):
        write_parquet(tmp_path / "nanochat" / "base_data" / f"shard_{i:05d}.parquet",
                      [{"text": r["text"]} for r in rows(4, start=4 * i)])
    write_parquet(tmp_path / "fineweb-edu" / "sample" / "10BT" / "000_00000.parquet",
                  [r | {"dump": "CC-MAIN-2024-10"} for r in rows(5)])
    write_parquet(tmp_path / "fineweb-edu" / "sample" / "10BT" / "001_00000.parquet",
                  [r | {"dump": "CC-MAIN-2024-18"} for r in rows(5, start=5)])
    docs_dir = tmp_path / "dolma" / "documents"
    docs_dir.mkdir(parents=True)
    for part in range(2):
        write_jsonl(docs_dir / f"part-{part}.json.gz", [
            {"id": f"p{part}-{i}", "text": f"dolma text {part} {i}", "source": "c4", "added": "2024-01-01",
             "metadata": {"len": i}} for i in range(3)])
    (tmp_path / "exports").mkdir()
    write_zst(tmp_path / "exports" / "chat.jsonl.zst", [{"prompt": f"hi {i}", "response": f"hello {i}"}
                                                        for i in range(4)])
    got = {}
    for spec in (nanochat, fineweb, dolma):
        path = tmp_path / "corpora.yaml"
        path.write_text(yaml.safe_dump(spec))
        reg = load_registry(path, tmp_path)
        [split] = reg.names()
        got[split] = list(read_split(reg, split, ReadStats()))
    assert [d.doc_id for d in got["pretrain"]][:5] == [f"nanochat:shard_00000.parquet/{i}" for i in range(4)] + [
        "nanochat:shard_00001.parquet/0"] and len(got["pretrain"]) == 12
    assert [d.doc_id for d in got["fineweb"]] == [f"fineweb_edu:d{i}" for i in range(10)]
    assert got["fineweb"][7].meta == {"url": "https://x/7", "dump": "CC-MAIN-2024-18", "score": 0.7}
    assert [d.doc_id for d in got["dolma"]] == [f"dolma:p{p}-{i}" for p in range(2) for i in range(3)] + [
        f"chat:{i}" for i in range(4)]
    assert got["dolma"][-1].text == "User: hi 3\nAssistant: hello 3"
    assert got["dolma"][0].meta == {"source": "c4", "added": "2024-01-01"}
