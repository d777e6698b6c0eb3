"""Asset metadata as plain Python: lib renders it, `defs` hands it to Dagster (lib never imports dagster).

A lib function returns a dict whose values are numbers, strings, or one of the wrappers here; the asset body passes
it to `cp_assets.defs.core.metadata.result(...)`, which turns `Markdown` into a markdown entry, `Json` into a JSON
entry and `FilePath` into a path entry, and drops `None`. Tables for the UI are built with `table(...)` from named
rows (dicts), never by position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence


class Markdown(str):
    """Markdown shown rendered in the UI (tables, inline PNG images)."""


class FilePath(str):
    """A file on disk (HTML plots, checkpoints)."""


@dataclass(frozen=True)
class Json:
    value: Any


class Link(str):
    """A markdown link kept whole in a table cell (never cut at the cell width)."""


def explorer_link(label: str = "explore", *, rollout: str | None = None, text: str | None = None) -> Link:
    """A link to the provenance explorer (`cprox serve`, at CPROX_EXPLORER_URL) for a rollout (MODEL/SAMPLE_ID) or a
    text; the Dagster UI's metadata tables link their top rows with it."""
    from urllib.parse import urlencode

    from cp_assets.lib.core import settings

    query = urlencode({"rollout": rollout} if rollout else {"text": (text or "")[:2000]})
    return Link(f"[{label}]({settings.explorer_url()}/?{query})")


def snippet(text: str | None, width: int = 80) -> str:
    body = " ".join((text or "").split())
    return body if len(body) <= width else body[:width - 1] + "…"


def cell(v: Any, digits: int = 4, width: int = 120) -> str:
    """One markdown cell: floats to `digits` significant digits, NaN/None empty, pipes escaped, newlines flattened,
    text cut at `width` characters."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, Link):
        return str(v).replace("|", "%7C")
    return str(v).replace("|", "\\|").replace("\n", " ")[:width]


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | Mapping[str, str], digits: int = 4,
          width: int = 120) -> Markdown:
    """A markdown table of named rows. `columns` lists the keys to show, or maps key -> header."""
    headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    head = "| " + " | ".join(headers.values()) + " |\n|" + "---|" * len(headers)
    body = ["| " + " | ".join(cell(r.get(k), digits, width) for k in headers) + " |" for r in rows]
    return Markdown("\n".join([head, *body]))


def image(path: Path, alt: str) -> Markdown:
    """A PNG embedded inline (data URI), so the UI shows it without a file server."""
    from cp_assets.lib.core.plots import markdown_image

    return Markdown(markdown_image(Path(path), alt))
