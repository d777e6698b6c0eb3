"""`cprox trace`: the maximal spans of a text that occur verbatim in a corpus split (OLMoTrace style).

  cprox trace "TEXT" [--split S] [--min-tokens 8] [--max-docs 5] [--olmotrace [--density 0.05]] [--json]
      TEXT "-" reads stdin. Without --split: every split with an n-gram index (the `ngram_index` asset).
"""

import json
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cp_assets.lib.core import settings

err = Console(stderr=True)
out = Console()


def cmd_trace(args) -> int:
    from cp_assets.lib.corpus.exact.ngram_split import built_splits, has_index, open_index
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.reports.trace import trace

    text = args.text if args.text != "-" else sys.stdin.read()
    splits = args.split or built_splits()
    if not splits:
        raise FileNotFoundError("no split has an n-gram index yet: materialize the `ngram_index` asset "
                                "(`cprox materialize --asset ngram_index`)")
    missing = [s for s in splits if not has_index(s)]
    if missing:
        raise FileNotFoundError(f"no n-gram index for split(s) {missing}: materialize `ngram_index` for them "
                                f"(built: {built_splits()})")
    store = PgStore(url=settings.database_url())  # CPROX_DATABASE_URL, else the embedded server
    results = {}
    for split in splits:
        spans = trace(open_index(split), text, min_tokens=args.min_tokens, max_docs=args.max_docs,
                      doc_text=lambda ids, s=split: store.document_texts(s, ids), olmotrace=args.olmotrace,
                      density=args.density)
        results[split] = spans
    if args.json:
        print(json.dumps({s: [sp.to_dict() for sp in spans] for s, spans in results.items()}, indent=1))
        return 0
    for split, spans in results.items():
        shown = Text(text)
        for sp in spans:
            shown.stylize("bold yellow", sp.char_start, sp.char_end)
        out.rule(f"{split}: {len(spans)} verbatim span(s) of >= {args.min_tokens or 'n'} tokens")
        out.print(shown)
        if not spans:
            continue
        table = Table(show_lines=False)
        for col in ("tokens", "count", "docs", "span", "first location"):
            table.add_column(col, overflow="fold")
        for sp in spans:
            loc = sp.locations[0] if sp.locations else None
            where = f"{loc.doc_id} @{loc.token_pos}: {loc.snippet or ''}" if loc else ""
            table.add_row(str(sp.n_tokens), str(sp.count), str(sp.n_docs), sp.text[:120], where[:200])
        out.print(table)
    return 0


def add_parsers(sub) -> None:
    t = sub.add_parser("trace", help="maximal spans of a text that occur verbatim in a split, with counts and docs")
    t.add_argument("text", help='the text ("-": stdin)')
    t.add_argument("--split", action="append", help="repeatable; default: every split with an n-gram index")
    t.add_argument("--min-tokens", type=int, default=None,
                   help="shortest span reported (default: the index's n, 8; any length >= 1 is exact)")
    t.add_argument("--max-docs", type=int, default=5, help="locations (with snippets) shown per span")
    t.add_argument("--olmotrace", action="store_true",
                   help="OLMoTrace's span rules: whole words, no sentence break inside, density cap, rarest first")
    t.add_argument("--density", type=float, default=0.05, help="with --olmotrace: spans per text token at most")
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_trace)
