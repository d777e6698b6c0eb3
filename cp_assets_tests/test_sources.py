"""Registry parsing and source readers: ids, offsets, options, and every kind of bad input."""

import gzip
import json
from pathlib import Path

import pytest
import yaml

from cp_assets.lib.corpus.registry import RegistryError, load_registry
from cp_assets.lib.corpus.sources import BadRecord, ReadStats, read_split


def make_registry(tmp_path: Path, splits: dict) -> Path:
    path = tmp_path / "corpora.yaml"
    path.write_text(yaml.safe_dump({"splits": splits}))
    return path


def read(tmp_path: Path, source: dict, split: str = "s") -> tuple[list, ReadStats]:
    reg = load_registry(make_registry(tmp_path, {split: {"sources": [source]}}), tmp_path)
    stats = ReadStats()
    return list(read_split(reg, split, stats)), stats


def write_jsonl(path: Path, lines: list) -> Path:
    raw = b"".join((x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode()) + b"\n"
                   for x in lines)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


GOOD = {"id": "a", "text": "alpha beta"}

# (name, lines of the file, reason, text that the message must contain besides file:line)
BAD_RECORDS = [
    ("malformed_json", [GOOD, '{"id": "b", "text": "unterminated'], "malformed_json", "malformed JSON"),
    ("missing_field", [GOOD, {"id": "b", "body": "x"}], "missing_field", "field 'text' is missing"),
    ("empty_document", [GOOD, {"id": "b", "text": "   "}], "empty_document", "field 'text' is empty"),
    ("non_utf8", [GOOD, b'{"id": "b", "text": "caf\xe9"}'], "non_utf8", "not valid UTF-8"),
    ("too_large", [GOOD, {"id": "b", "text": "x" * 500}], "too_large", "over max_doc_chars=100"),
    ("not_a_string", [GOOD, {"id": "b", "text": 42}], "bad_field", "field 'text' is int"),
]


@pytest.mark.parametrize("name,lines,reason,words", BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_bad_record_names_file_line_and_field(tmp_path, name, lines, reason, words, suffix):
    path = write_jsonl(tmp_path / f"data{suffix}", lines + [{"id": "c", "text": "gamma"}])
    src = {"path": path.name, "text_field": "text", "id_field": "id", "max_doc_chars": 100}
    with pytest.raises(BadRecord) as exc:
        read(tmp_path, src)
    assert f"{path}:2" in str(exc.value) and words in str(exc.value)
    assert exc.value.reason == reason
    docs, stats = read(tmp_path, src | {"on_bad_record": "skip"})
    assert [d.doc_id for d in docs] == ["data:a", "data:c"]
    assert stats.skipped == {reason: 1}


def test_binary_file_is_refused_even_when_skipping(tmp_path):
    path = tmp_path / "blob.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(BadRecord, match="binary file"):
        read(tmp_path, {"path": path.name, "text_field": "text", "on_bad_record": "skip"})


@pytest.mark.parametrize("name,body", [("empty.jsonl", b""), ("blank.jsonl.gz", gzip.compress(b"\n \n", mtime=0)),
                                       ("empty.txt", b"  \n")], ids=["empty.jsonl", "blank.jsonl.gz", "empty.txt"])
def test_empty_source_file_fails_or_warns(tmp_path, name, body):
    """An empty file is an error by default (`on_bad_record: error`) and a warning with `skip`; never silence."""
    (tmp_path / name).write_bytes(body)
    write_jsonl(tmp_path / "good.jsonl", [GOOD])
    empty = {"path": name} | ({} if name.endswith(".txt") else {"text_field": "text"})
    with pytest.raises(BadRecord) as exc:
        read(tmp_path, empty)
    assert exc.value.reason == "empty_file" and str(exc.value).startswith(f"{tmp_path / name}: empty file")
    reg = load_registry(make_registry(tmp_path, {"s": {"sources": [
        empty | {"on_bad_record": "skip"}, {"path": "good.jsonl", "text_field": "text", "id_field": "id"}]}}), tmp_path)
    stats = ReadStats()
    assert [d.doc_id for d in read_split(reg, "s", stats)] == ["good:a"]
    assert stats.skipped == {"empty_file": 1}
    [warning] = stats.warnings
    assert warning.startswith(f"{tmp_path / name}: empty file") and "split 's'" in warning


def test_emptiness_is_seen_while_reading_each_file_once(tmp_path, monkeypatch):
    """No second open to look for emptiness: each JSONL or text file of a directory source is opened once, and an
    empty one is an error, or under `skip` a warning, in its place among the others."""
    from cp_assets.lib.corpus import formats

    opened, real = [], formats.open_binary
    monkeypatch.setattr(formats, "open_binary", lambda path: opened.append(path.name) or real(path))
    (tmp_path / "d").mkdir()
    write_jsonl(tmp_path / "d" / "a.jsonl", [GOOD])
    (tmp_path / "d" / "b.jsonl").write_bytes(b" \n\n")
    write_jsonl(tmp_path / "d" / "c.jsonl.gz", [{"id": "c", "text": "gamma"}])
    (tmp_path / "d" / "e.txt").write_text("a text shard\n")
    source = {"path": "d/", "text_field": "text", "on_bad_record": "skip"}
    docs, stats = read(tmp_path, source)
    assert [d.text for d in docs] == ["alpha beta", "gamma", "a text shard"]
    assert opened == ["a.jsonl", "b.jsonl", "c.jsonl.gz", "e.txt"]
    assert stats.skipped == {"empty_file": 1}
    assert stats.warnings == [f"{tmp_path / 'd' / 'b.jsonl'}: empty file: source 'd' of split 's' has no records in it"]
    with pytest.raises(BadRecord) as exc:
        read(tmp_path, source | {"on_bad_record": "error"})
    assert exc.value.reason == "empty_file" and exc.value.where == str(tmp_path / "d" / "b.jsonl")
    assert "`on_bad_record: skip` reads on past it" in str(exc.value)

def test_missing_file_and_truncated_gzip(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read(tmp_path, {"path": "nope.jsonl", "text_field": "text"})
    good = gzip.compress(b"".join(json.dumps({"text": f"doc {i} " * 50}).encode() + b"\n" for i in range(200)))
    (tmp_path / "cut.jsonl.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(BadRecord, match="cut.jsonl.gz"):
        read(tmp_path, {"path": "cut.jsonl.gz", "text_field": "text"})


def test_ids_offsets_and_locators(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl.gz", [{"text": "first"}, "", {"text": "second é"}, {"text": "third"}])
    docs, _ = read(tmp_path, {"path": path.name, "text_field": "text"})
    assert [d.doc_id for d in docs] == ["d:0", "d:1", "d:2"]
    raw = gzip.decompress(path.read_bytes())
    for d in docs:
        line = int(d.locator.rsplit(":", 1)[1])
        assert raw.splitlines()[line - 1] == raw[d.byte_offset:].split(b"\n", 1)[0]
        assert json.loads(raw[d.byte_offset:].split(b"\n", 1)[0])["text"] == d.text


def test_template_group_by_where_exclude_limit(tmp_path):
    write_jsonl(tmp_path / "verses.jsonl", [
        {"book": "Gen", "chapter": 1, "text": "In the beginning"}, {"book": "Gen", "chapter": 1, "text": "And"},
        {"book": "Gen", "chapter": 2, "text": "Thus"}, {"book": "Exo", "chapter": 1, "text": "Now these"}])
    docs, _ = read(tmp_path, {"path": "verses.jsonl", "text_field": "text", "group_by": ["book", "chapter"],
                              "where": {"book": ["Gen"]}})
    assert [(d.doc_id, d.text) for d in docs] == [("verses:Gen/1", "In the beginning\nAnd"), ("verses:Gen/2", "Thus")]
    write_jsonl(tmp_path / "qa.jsonl", [{"q": f"q{i}", "a": f"a{i}"} for i in range(5)])
    write_jsonl(tmp_path / "heldout.jsonl", [{"problem": "q1"}, {"problem": "q3"}])
    docs, stats = read(tmp_path, {"path": "qa.jsonl", "template": "Q: {q}\nA: {a}", "limit": 2,
                                  "exclude": {"path": "heldout.jsonl", "field": "problem", "key": "q"}})
    assert [d.text for d in docs] == ["Q: q0\nA: a0", "Q: q2\nA: a2"] and stats.excluded == 1


def test_text_sections_with_crlf(tmp_path):
    (tmp_path / "book.txt").write_bytes(b"Preface\r\n\r\nChapter 1\r\nIt was.\r\n\r\nChapter 2\r\nThe end.\r\n")
    docs, _ = read(tmp_path, {"path": "book.txt", "split_on": r"^Chapter \d+"})
    assert [d.text for d in docs] == ["Preface\n", "Chapter 1\nIt was.\n", "Chapter 2\nThe end."]
    assert [d.locator.rsplit(":", 1)[1] for d in docs] == ["1", "3", "6"]
    raw = (tmp_path / "book.txt").read_bytes()
    assert raw[docs[1].byte_offset:].startswith(b"Chapter 1")


def test_hf_streaming_path_with_a_local_dataset(tmp_path):
    """The Hugging Face `datasets` streaming code path, pointed at a local JSON dataset (no network)."""
    write_jsonl(tmp_path / "hub.jsonl", [{"text": f"streamed document {i}"} for i in range(7)])
    docs, stats = read(tmp_path, {"hf": {"path": "json", "data_files": str(tmp_path / "hub.jsonl")},
                                  "name": "hub", "text_field": "text", "limit": 5})
    assert [d.text for d in docs] == [f"streamed document {i}" for i in range(5)]
    assert docs[0].locator == "hf:json/train#0" and stats.documents == 5


@pytest.mark.parametrize("splits,message", [
    ({"s": {"sources": [{"path": "x.jsonl"}]}}, "exactly one of `text_field` or `template`"),
    ({"s": {"sources": [{"text_field": "t"}]}}, "exactly one of `path`"),
    ({"Bad Name": {"sources": [{"path": "x.txt"}]}}, "split name 'Bad Name'"),
    ({"s": {"sources": [{"path": "x.txt", "colour": "red"}]}}, "splits.s.sources.0.colour"),
    ({"s": {"sources": [{"path": "a/x.txt"}, {"path": "b/x.txt"}]}}, "share the name"),
])
def test_registry_errors_name_the_file_and_field(tmp_path, splits, message):
    path = make_registry(tmp_path, splits)
    with pytest.raises(RegistryError) as exc:
        load_registry(path, tmp_path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_unknown_split_and_adding_a_split(tmp_path):
    """A user adds a split with a few lines; relative paths resolve against the data dir."""
    write_jsonl(tmp_path / "mine.jsonl.gz", [{"text": "my own corpus"}])
    path = tmp_path / "corpora.yaml"
    path.write_text("splits: {mine: {sources: [{path: mine.jsonl.gz, text_field: text}]}}\n")
    reg = load_registry(path, tmp_path)
    assert reg.names() == ["mine"] and [d.text for d in read_split(reg, "mine")] == ["my own corpus"]
    with pytest.raises(RegistryError, match=r"unknown split 'sft'.*\['mine'\]"):
        list(read_split(reg, "sft"))
    with pytest.raises(RegistryError, match="not found"):
        load_registry(tmp_path / "missing.yaml", tmp_path)


def test_demo_registries_read_the_shared_data():
    from cp_assets.lib.core import settings

    for name in ("corpora.yaml", "corpora.full.yaml"):
        reg = load_registry(settings.REPO_ROOT / name)
        assert reg.names() == ["pretrain", "midtrain", "sft"]
        for split in reg.names():
            stats = ReadStats()
            first = next(read_split(reg, split, stats))
            source = reg.split(split).sources[0]
            path = settings.data_dir() / source.path
            assert (first.doc_id, first.locator) == (f"{source.name}:0", f"{path}:1")
            with gzip.open(path, "rt") as f:  # the file's first record, read here without the project's reader
                record = json.loads(f.readline())
            longest = max((v for v in record.values() if isinstance(v, str)), key=len)
            assert longest.strip()[:300] in first.text, f"{name} {split}: not the first record of {path}"
