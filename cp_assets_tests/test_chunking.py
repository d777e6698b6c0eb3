"""Token-aware chunking: limits, offsets back into the document, overlap, paragraph packing, stable ids."""

import pytest

from cp_assets.lib.corpus.chunking import ChunkConfig, chunk_document, paragraphs
from cp_assets.lib.corpus.encoder import load_tokenizer
from cp_assets.lib.corpus.sources import Document


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("all-MiniLM-L6-v2")


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


LONG = " ".join(f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(120))
SHORT_PARAS = "\n\n".join(f"Paragraph {i}: a short note." for i in range(30))
MIXED = f"Title line\n\n{LONG}\n\n  \n\n{SHORT_PARAS}\n\nÉpilogue — with accents, “quotes” and emoji 🙂."


@pytest.mark.parametrize("max_tokens,overlap", [(32, 0), (64, 8), (128, 16), (256, 32)])
@pytest.mark.parametrize("text", [LONG, SHORT_PARAS, MIXED], ids=["long", "short_paragraphs", "mixed"])
def test_chunks_respect_limit_and_map_back(tok, text, max_tokens, overlap):
    doc = Document("src:1", "s", "src", "f:1", 0, text)
    chunks = chunk_document(doc, tok, ChunkConfig(max_tokens, overlap))
    assert chunks and [c.chunk_id for c in chunks] == [f"src:1#{i}" for i in range(len(chunks))]
    for c in chunks:
        assert c.text == text[c.char_start:c.char_end] and c.text.strip() == c.text
        assert c.n_tokens <= max_tokens and n_tokens(tok, c.text) <= max_tokens + 2
    covered = set()
    for c in chunks:
        covered.update(range(c.char_start, c.char_end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace()), "every character lands in a chunk"
    again = chunk_document(doc, tok, ChunkConfig(max_tokens, overlap))
    assert [(c.chunk_id, c.text_hash) for c in again] == [(c.chunk_id, c.text_hash) for c in chunks]


def test_long_paragraph_windows_overlap_and_end_at_sentences(tok):
    chunks = chunk_document(Document("d", "s", "x", "f:1", 0, LONG), tok, ChunkConfig(64, 8))
    assert len(chunks) > 5
    for a, b in zip(chunks, chunks[1:]):
        assert b.char_start < a.char_end, "consecutive windows overlap"
    assert sum(c.text.endswith(".") for c in chunks[:-1]) >= len(chunks) // 2, "cuts prefer sentence ends"


def test_short_paragraphs_are_packed_whole(tok):
    chunks = chunk_document(Document("d", "s", "x", "f:1", 0, SHORT_PARAS), tok, ChunkConfig(64, 8))
    assert len(chunks) < 30 / 3
    for c in chunks:
        assert c.text.startswith("Paragraph") and c.text.endswith("note.")
        assert c.text == SHORT_PARAS[c.char_start:c.char_end]
    assert [c.char_start for c in chunks[1:]] == [c.char_end + 2 for c in chunks[:-1]]  # packed, none lost
    assert (chunks[0].char_start, chunks[-1].char_end) == (0, len(SHORT_PARAS))


def test_paragraph_spans_and_config_validation():
    assert paragraphs("a b\n\n\n c\nd \n\n") == [(0, 3), (7, 10)]
    assert paragraphs(" \n\n ") == []
    with pytest.raises(ValueError, match="overlap"):
        ChunkConfig(64, 40)
    with pytest.raises(ValueError, match="at least 8"):
        ChunkConfig(4, 0)
