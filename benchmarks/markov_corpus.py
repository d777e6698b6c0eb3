"""Synthetic English corpus for the n-gram index scale benchmark (issue 15): a seeded word-level Markov chain.

The exact n-gram index needs 10M, 100M and 1B tokens of text whose n-gram counts mean something: a repeated corpus
would make nearly every 13-gram a duplicate. This writes Parquet shards of documents drawn from an order-2
word Markov chain (backing off to order 1, then to unigrams, for contexts never followed by a word) fitted on the
bundled corpora under CPROX_DATA_DIR, read in place: the FineWeb-Edu sample, WikiText-2 (the test split, the only one
bundled; light detokenization), and the public-domain texts (Austen, Shakespeare, KJV, inaugural and State of the Union
addresses, Frost). GSM8K and MATH are left out on purpose: they are the eval sets a contamination benchmark looks for.
Words are whitespace-separated tokens with their punctuation, plus line and paragraph breaks, so the text reads as
English to a WordPiece tokenizer. Each document starts at a sentence start, has a length drawn from the source
documents' lengths (FineWeb-Edu, WikiText articles, speeches, Austen chapters; +-30% jitter) and is cut back to its
last sentence end in its second half.

    .venv/bin/python benchmarks/markov_corpus.py /tmp/markov --tokens 100M --seed 0 --check

Output: OUT_DIR/part-00000.parquet, ... with columns `id`, `text` (zstd, row groups of 1,000 rows), about
`--shard-tokens` (default 50M) MiniLM WordPiece tokens each, estimated from words with the tokens/word ratio measured
on the source. Shard k's documents depend only on (seed, k, shard_tokens): a 100M corpus is the first two shards of
the 1B one, and a short last shard is a prefix of the full one. The fitted model is cached in
<tmp>/cprox_markov/ (`CACHE_DIR`). Read it back with a registry source `{path: OUT_DIR/, text_field: text,
id_field: id}`.

Speed: no per-word Python. A batch of documents advances in lockstep, one numpy step per word position, all chains at
once (sorted longest first, so the active ones are a prefix). A state's successors are stored as its occurrences in
the source (CSR: state -> [start, start+count) of (word, next state)), so a step is a uniform draw and four gathers,
and the next state comes with the sampled word (no hash lookup). Text bytes come from one gather out of a flat
vocabulary buffer (np.repeat of offsets), and Parquet is written on a second thread.

Measured (2026-12-04, AMD EPYC, 2 vCPUs, load 0.5-0.9; the one-off fit, ~14 s, is cached and not counted):
    100M tokens: 16.5 s, 6.1M tokens/s; 2 shards, 32,870 documents, 432 MB of text, 199 MB of Parquet; peak RSS 0.64 GB
    10M tokens:   2.9 s, 3.5M tokens/s (its batches are sized for a whole 50M shard, so part of the text goes unused);
                  peak RSS 0.53 GB. 1B was not run here: at 6M tokens/s it would take about 3 minutes and 2 GB of Parquet.
    --check, the first 1.23M MiniLM WordPiece tokens    generated   source (as many tokens, random 1,000-word pieces)
        distinct 8-grams                                  0.975       0.982
        distinct 13-grams                                 0.995       0.992
    generated 13-grams found verbatim in the source (all of it, 3.0M tokens): 2.1%
    tokens per word: 1.2436 estimated on the source, 1.2399 on generated text (the estimate is 0.3% high)
    the first 10.4M generated tokens: distinct 8-grams 0.888, distinct 13-grams 0.979
Model version 3 gave these; version 4 (`open_traps`) changes only the 30 documents of the 100M corpus that ended in
a `??` loop: the 1.23M figures stay; over the first 10.1M tokens, distinct 8-grams 0.8895 -> 0.8905, 13-grams
0.9796 -> 0.9808.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

VERSION = 4  # bump when fitting changes: it keys the model cache (4: traps opened, `open_traps`)
TOKENIZER = "all-minilm-l6-v2"
MIN_BATCH, MAX_BATCH = 64, 2048  # documents advanced in lockstep
ROW_GROUP = 1000
SENT_END = re.compile(r"""[.!?][)\]"'’”]*$""")
SENT_START = re.compile(r"""^["'(“‘]?[A-Z]""")
SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string())])


CACHE_DIR = Path(tempfile.gettempdir()) / "cprox_markov"


def data_dir_default() -> Path:
    from cp_assets.lib.core import settings

    return settings.data_dir()


def _jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _text(path: Path) -> str:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return fh.read()


def _wikitext(text: str) -> list[str]:
    """Articles of WikiText raw, headings as plain lines, its tokenized spacing undone."""
    text = re.sub(r" @(.)@ ", r"\1", text)
    text = re.sub(r" ([,.;:!?)\]]|'s\b|n't\b)", r"\1", text)
    text = re.sub(r"([(\[]) ", r"\1", text)
    text = re.sub(r"(?m)^ ?(?:= )+(.*?)(?: =)+ ?$", lambda m: "\x00" + m[1] if m[0].count("=") == 2 else m[1], text)
    return [a.strip() for a in text.split("\x00") if a.strip()]


def source_docs(data_dir: Path) -> tuple[list[str], list[bool]]:
    """The source documents, and for each whether its length counts in the document-length distribution."""
    d, pd = data_dir, data_dir / "public_domain_texts"
    sized = [r["text"] for r in _jsonl(d / "fineweb_edu_sample" / "fineweb_edu_sample10bt_150.jsonl.gz")]
    sized += _wikitext(_text(d / "wikitext2_raw" / "wiki.test.raw.gz"))
    for name in ("us_inaugural_addresses", "us_state_of_the_union_1945_2006"):
        sized += [r["text"] for r in _jsonl(pd / f"{name}.jsonl.gz")]
    austen = re.sub(r"(?<!\n)\n(?!\n)", " ", _text(pd / "austen_pride_and_prejudice.txt.gz"))  # unwrap lines
    sized += re.split(r"(?mi)^chapter [0-9ivxlc]+\s*$", austen)[1:]  # the file holds three novels, 221 chapters
    other = [r["text"] for r in _jsonl(pd / "shakespeare_8_plays.jsonl.gz")]
    other += [_text(pd / "tinyshakespeare.txt.gz"), _text(pd / "frost_the_road_not_taken.txt.gz")]
    other += re.split(r"\n\s*\n", _text(pd / "shakespeare_sonnets.txt.gz"))
    chapters: dict[tuple, list[str]] = {}
    for r in _jsonl(pd / "kjv_bible_verses.jsonl.gz"):
        chapters.setdefault((r["book"], r["chapter"]), []).append(r["text"])
    other += [" ".join(v) for v in chapters.values()]
    return sized + other, [True] * len(sized) + [False] * len(other)


def words_of(text: str) -> list[str]:
    text = re.sub(r"[^\S\n]+", " ", text)
    text = re.sub(r"\n{2,}", "\n\n", re.sub(r" ?\n ?", "\n", text))
    return re.findall(r"\n\n|\n|\S+", text.strip())


def _cache_path(data_dir: Path) -> Path:
    h = hashlib.sha256(f"v{VERSION}".encode())
    for p in sorted(data_dir.rglob("*.gz")):
        h.update(f"{p.relative_to(data_dir)}:{p.stat().st_size}".encode())
    return CACHE_DIR / f"model-{h.hexdigest()[:16]}.npz"


def load_model(data_dir: Path | None = None, log=print) -> dict:
    """The fitted model (arrays), from the cache or fitted now (~12 s) and cached."""
    data_dir = Path(data_dir or data_dir_default())
    path = _cache_path(data_dir)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    t0 = time.time()
    model = fit(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.npz")
    np.savez(tmp, **model)
    os.replace(tmp, path)
    log(f"fitted the Markov model in {time.time() - t0:.1f} s: {int(model['n_source_words'])} source words, "
        f"{len(model['vocab_len']) - 1} distinct, {len(model['states'])} states; cached in {path}")
    return model


def fit(data_dir: Path) -> dict:
    docs, sized = source_docs(data_dir)
    vocab: dict[str, int] = {"": 0}  # 0: BOS, the context before a document or sentence start
    ids: list[int] = []
    doc_start, lengths = [], []
    for text, counted in zip(docs, sized):
        w = words_of(text)
        if len(w) < 3:
            continue
        doc_start.append(len(ids))
        ids.extend(vocab.setdefault(x, len(vocab)) for x in w)
        if counted:
            lengths.append(len(w))
    words = list(vocab)
    V, seq = len(words), np.array(ids, np.int64)
    n = len(seq)
    is_nl = np.array([w.startswith("\n") for w in words])
    is_end = np.array([bool(SENT_END.search(w)) for w in words])
    can_start = np.array([bool(SENT_START.match(w)) for w in words])
    starts = np.array(doc_start)
    off = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    p1 = np.where(off >= 1, np.roll(seq, 1), 0)
    p2 = np.where(off >= 2, np.roll(seq, 2), 0)
    # every sentence start is also a start: (BOS, BOS) -> w_i and (BOS, w_i) -> w_i+1
    sent = np.flatnonzero((off >= 1) & (is_end[p1] | (p1 == vocab.get("\n\n", -1))) & can_start[seq])
    sent2 = sent[(sent + 1 < n) & (off[np.minimum(sent + 1, n - 1)] > 0)]
    a = np.r_[p2, np.zeros(len(sent) + len(sent2), np.int64)]
    b = np.r_[p1, np.zeros(len(sent), np.int64), seq[sent2]]
    c = np.r_[seq, seq[sent], seq[sent2 + 1]]
    keys2, state2 = np.unique(a * V + b, return_inverse=True)  # order-2 states 0 .. S2-1; (BOS, BOS) is 0
    real = p1 != 0
    words1 = np.unique(p1[real])  # order-1 states S2 .. S2+S1-1; then one unigram state
    S2, S1 = len(keys2), len(words1)
    o1 = np.full(V, S2 + S1)
    o1[words1] = S2 + np.arange(S1)  # a word's order-1 state, else the unigram state
    # the state after (a, b) -> c is (b, c): the next position's own state, looked up only at document ends and for
    # the sentence-start pairs; (b, c) never followed by a word backs off to c's order-1 state, then to unigrams
    cont = np.flatnonzero(np.r_[off[1:] > 0, False])
    nxt = np.empty(len(a), np.int64)
    nxt[cont] = state2[cont + 1]
    rest = np.setdiff1d(np.arange(len(a)), cont)
    k = b[rest] * V + c[rest]
    i = np.minimum(np.searchsorted(keys2, k), S2 - 1)
    nxt[rest] = np.where(keys2[i] == k, i, o1[c[rest]])
    state = np.r_[state2, o1[p1[real]], np.full(n, S2 + S1)]
    word = np.r_[c, seq[real], seq]
    nxt = open_traps(state, np.r_[nxt, nxt[:n][real], o1[seq]], S2 + S1 + 1)
    order = np.argsort(state, kind="stable")
    count = np.bincount(state, minlength=S2 + S1 + 1)
    vocab_sp = [(" " + w).encode() for w in words]
    vlen = np.array([len(x) for x in vocab_sp], np.int32)
    sample = np.concatenate([seq[s:s + 1000] for s in range(0, n, 8000)])  # every 8th 1,000 words
    # per state (first occurrence, occurrences); per occurrence (word, next state): one gather each per step.
    # count * (1 - 2^-40): floor(u * count) < count for every u in [0, 1)
    return {"states": np.stack([np.cumsum(count) - count, count * (1 - 2.0**-40)], 1).astype(np.float64),
            "occurrences": np.stack([word[order], nxt[order]], 1).astype(np.int32),
            "vocab_buf": np.frombuffer(b"".join(vocab_sp), np.uint8), "vocab_off": (np.cumsum(vlen) - vlen),
            "vocab_len": vlen - 1, "is_nl": is_nl, "is_end": is_end, "lengths": np.array(lengths, np.int32),
            "tokens_per_word": np.float64(tokens_per_word([words[i] for i in sample])),
            "n_source_words": np.int64(n)}


def open_traps(state: np.ndarray, nxt: np.ndarray, n_states: int) -> np.ndarray:
    """`nxt` with every trap opened: a set of states the chain reaches from a sentence start (state 0) and cannot
    leave (the closing `??\n\n??` lines of one speech made a two-state loop; 30 of the 32,870 documents of 100M tokens
    ended in it) is entered at state 0 instead. Only transitions into a trap change."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    nxt = nxt.copy()
    while True:
        graph = csr_matrix((np.ones(len(state)), (state, nxt)), shape=(n_states, n_states))
        live = breadth_first_order(graph, 0, directed=True, return_predecessors=False)  # reached from state 0
        comp = connected_components(graph, directed=True, connection="strong")[1]
        leaky = comp[state][comp[state] != comp[nxt]]  # components with a transition out of them
        traps = np.setdiff1d(comp[live], np.r_[leaky, comp[0]])
        if not len(traps):
            return nxt
        nxt[np.isin(comp[nxt], traps) & ~np.isin(comp[state], traps)] = 0


def tokens_per_word(words: list[str]) -> float:
    tok = tokenizer()
    text = [" ".join(words[i:i + 1000]) for i in range(0, len(words), 1000)]
    return sum(len(e.ids) for e in tok.encode_batch(text, add_special_tokens=False)) / len(words)


def tokenizer():
    from cp_assets.lib.corpus.exact.ngram_index import load_tokenizer
    return load_tokenizer(TOKENIZER)


def batch(m: dict, rng: np.random.Generator, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """n_docs documents advanced in lockstep: (word ids of all documents, concatenated; words per document)."""
    pool = m["lengths"]
    lengths = np.clip(pool[rng.integers(0, len(pool), n_docs)] * np.exp(rng.normal(0, 0.3, n_docs)), 16, 40_000)
    lengths = lengths.astype(np.int64)
    order = np.argsort(-lengths, kind="stable")
    srt = lengths[order]
    offs = np.r_[0, np.cumsum(lengths)]
    base = offs[:-1][order]
    active = np.searchsorted(-srt, -np.arange(srt[0]), side="left")  # chains still writing at step t
    out = np.empty(offs[-1], np.int32)
    state = np.zeros(n_docs, np.int32)  # state 0: (BOS, BOS), a sentence start
    states, occurrences = m["states"], m["occurrences"]
    for t in range(srt[0]):
        n = active[t]
        sc = states.take(state[:n], axis=0)
        occ = occurrences.take((sc[:, 0] + rng.random(n) * sc[:, 1]).astype(np.int32), axis=0)
        out[base[:n] + t] = occ[:, 0]
        state[:n] = occ[:, 1]
    # cut each document back to its last sentence end, if that lies in its second half
    pos = np.arange(len(out))
    last = np.maximum.reduceat(np.where(m["is_end"][out], pos, -1), offs[:-1])
    keep = np.where(last >= offs[:-1] + lengths // 2, last + 1 - offs[:-1], lengths)
    return out[pos < np.repeat(offs[:-1] + keep, lengths)], keep


def texts(m: dict, words: np.ndarray, per_doc: np.ndarray) -> pa.Array:
    """The documents' text as one Arrow string array, built from the flat vocabulary buffer (no per-word Python)."""
    first = np.zeros(len(words), bool)
    first[np.r_[0, np.cumsum(per_doc)[:-1]]] = True
    nl = m["is_nl"][words]
    sep = ~(first | nl | np.r_[False, nl[:-1]])  # a space before each word but the first and around line breaks
    size = m["vocab_len"][words] + sep
    ends = np.cumsum(size, dtype=np.int64)
    src = m["vocab_off"][words] + 1 - sep  # vocab_buf holds " word": skip the space where there is none
    idx = np.repeat((src - (ends - size)).astype(np.int32), size) + np.arange(ends[-1], dtype=np.int32)
    data = m["vocab_buf"][idx]
    offsets = np.r_[0, ends[np.cumsum(per_doc) - 1]].astype(np.int32)
    return pa.StringArray.from_buffers(len(per_doc), pa.py_buffer(offsets), pa.py_buffer(data))


def shard(m: dict, seed: int, k: int, shard_words: int, limit_words: int):
    """Tables of shard k's documents, in order, until limit_words (<= shard_words) are out. The batch sizes follow
    shard_words alone, so a shorter limit gives a prefix of the same documents."""
    done = b = n_out = 0
    mean = float(m["lengths"].mean())
    while done < limit_words:
        n_docs = int(np.clip(np.ceil(1.1 * (shard_words - done) / mean), MIN_BATCH, MAX_BATCH))
        words, per_doc = batch(m, np.random.default_rng([seed, k, b]), n_docs)
        cum = done + np.cumsum(per_doc)
        take = min(int(np.searchsorted(cum, limit_words)) + 1, n_docs)
        words, per_doc = words[:cum[take - 1] - done], per_doc[:take]
        ids = pa.array([f"markov-s{seed}-{k:05d}-{i:07d}" for i in range(n_out, n_out + take)], pa.string())
        yield pa.Table.from_arrays([ids, texts(m, words, per_doc)], schema=SCHEMA), int(per_doc.sum())
        done, b, n_out = int(cum[take - 1]), b + 1, n_out + take


class _Writer:
    """One shard file, row groups of exactly ROW_GROUP rows (the last one shorter); written to a hidden name first."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp")
        self.pq = pq.ParquetWriter(self.tmp, SCHEMA, compression="zstd", use_dictionary=False)
        self.pending: list[pa.Table] = []

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        rows = sum(t.num_rows for t in self.pending)
        if rows >= ROW_GROUP:
            whole = pa.concat_tables(self.pending)
            cut = rows - rows % ROW_GROUP
            self.pq.write_table(whole.slice(0, cut), row_group_size=ROW_GROUP)
            self.pending = [whole.slice(cut)]

    def close(self) -> None:
        if sum(t.num_rows for t in self.pending):
            self.pq.write_table(pa.concat_tables(self.pending), row_group_size=ROW_GROUP)
        self.pq.close()
        os.replace(self.tmp, self.path)


def generate(out_dir: Path, n_tokens: int, seed: int = 0, shard_tokens: int = 50_000_000,
             data_dir: Path | None = None, log=print) -> dict:
    """Write about n_tokens (estimated MiniLM WordPiece tokens) of Markov text to out_dir/part-*.parquet."""
    m = load_model(data_dir, log)
    t0 = time.time()
    ratio = float(m["tokens_per_word"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total_words, shard_words = round(n_tokens / ratio), max(1, round(shard_tokens / ratio))
    files, docs, done, k = [], 0, 0, 0
    text_bytes = 0
    with ThreadPoolExecutor(1) as pool:
        while done < total_words:
            path = out_dir / f"part-{k:05d}.parquet"
            writer, pending = _Writer(path), None
            for table, n_words in shard(m, seed, k, shard_words, min(shard_words, total_words - done)):
                if pending:
                    pending.result()  # at most one table waits: bounded memory
                pending = pool.submit(writer.write, table)
                docs, done = docs + table.num_rows, done + n_words
                text_bytes += table.column("text").chunk(0).buffers()[2].size
            if pending:
                pending.result()
            pool.submit(writer.close).result()
            files.append(path)
            log(f"{path.name}: {done:,} words, ~{done * ratio / 1e6:,.1f}M tokens so far, "
                f"{done * ratio / (time.time() - t0):,.0f} tokens/s, RSS {peak_rss_gb():.2f} GB")
            k += 1
    for stale in out_dir.glob("part-*.parquet"):  # left by an earlier, longer run
        if re.fullmatch(r"part-\d{5}\.parquet", stale.name) and stale not in files:
            stale.unlink()
            log(f"removed {stale.name}, left by an earlier run")
    secs = time.time() - t0
    return {"files": len(files), "documents": docs, "words": done, "tokens_est": round(done * ratio),
            "tokens_per_word": ratio, "text_bytes": text_bytes, "file_bytes": sum(p.stat().st_size for p in files),
            "seconds": round(secs, 2), "tokens_per_s": round(done * ratio / secs), "peak_rss_gb": peak_rss_gb()}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def ngram_hashes(docs: list[np.ndarray], n: int) -> np.ndarray:
    """A 64-bit polynomial hash of every n-token window inside a document."""
    out = []
    for ids in docs:
        if len(ids) >= n:
            win = np.lib.stride_tricks.sliding_window_view(ids.astype(np.uint64), n)
            out.append(win @ (np.uint64(0x9E3779B97F4A7C15) ** np.arange(n, dtype=np.uint64)))
    return np.concatenate(out) if out else np.zeros(0, np.uint64)


def check(out_dir: Path, data_dir: Path | None = None, sample_tokens: int = 1_000_000) -> dict:
    """Distinct 8/13-gram shares of the first ~sample_tokens generated tokens vs as many source tokens (random
    1,000-word pieces), and the share of generated 13-grams found verbatim anywhere in the source."""
    tok = tokenizer()
    enc = lambda texts: [np.array(e.ids, np.int64) for e in tok.encode_batch(texts, add_special_tokens=False)]
    gen, n, n_words = [], 0, 0
    for path in sorted(Path(out_dir).glob("part-*.parquet")):
        for rb in pq.ParquetFile(path).iter_batches(batch_size=100, columns=["text"]):
            if n >= sample_tokens:
                break
            texts_ = rb.column(0).to_pylist()
            gen += enc(texts_)
            n, n_words = sum(map(len, gen)), n_words + sum(len(words_of(t)) for t in texts_)
    docs, _ = source_docs(Path(data_dir or data_dir_default()))
    src = enc([" ".join(w[i:i + 1000]) for w in map(words_of, docs) for i in range(0, len(w), 1000)])
    sample, n_src = [], 0
    for i in np.random.default_rng(0).permutation(len(src)):
        if n_src >= n:
            break
        sample.append(src[i])
        n_src += len(src[i])
    fig = {"generated_tokens": n, "tokens_per_word_generated": round(n / max(1, n_words), 4),
           "source_sample_tokens": n_src, "source_tokens": sum(map(len, src))}
    for k in (8, 13):
        for name, d in (("generated", gen), ("source", sample)):
            h = ngram_hashes(d, k)
            fig[f"distinct_{k}gram_{name}"] = round(len(np.unique(h)) / max(1, len(h)), 4)
    gen13 = ngram_hashes(gen, 13)
    fig["verbatim_13gram_from_source"] = round(float(np.isin(gen13, np.unique(ngram_hashes(src, 13))).mean()), 4)
    return fig


def parse_count(s: str) -> int:
    mult = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}.get(s[-1:].upper(), 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--tokens", type=parse_count, default=parse_count("10M"), help="e.g. 10M, 100M, 1B")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-tokens", type=parse_count, default=50_000_000)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--check", action="store_true", help="quality figures on ~1M tokens (MiniLM WordPiece)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    result = generate(args.out_dir, args.tokens, args.seed, args.shard_tokens, args.data_dir,
                      log=lambda s: print(s, flush=True))
    print(json.dumps(result, indent=1))
    if args.check:
        print(json.dumps(check(args.out_dir, args.data_dir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
