"""Content versions: a short hash of what a materialization holds, reported to Dagster as its data version.

Automation (`cp_assets/defs/core/automation.py`) re-runs a report only when an input's data version changed, so
re-materializing an input that ends up with the same content (an incremental index with no new documents, an
embedding split that was up to date, an eval set read again, rollouts that were all cached) starts nothing downstream.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable


def content_version(rows: Iterable[Any]) -> str:
    """sha256 (first 16 hex digits) of the rows as JSON lines, in the order given: sort them first when the order
    is not meaningful."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def samples_version(rows: Iterable[dict]) -> str:
    """Eval samples as models see them: id, request prompt, reference, in the set's order."""
    return content_version([r["sample_id"], r["request_prompt"], r.get("reference")] for r in rows)


def rollouts_version(rollouts: Iterable[Any]) -> str:
    """Stored rollouts of one eval set x model: (sample, sampling parameters, completion), order-free."""
    return content_version(sorted([r.sample_id, r.params_hash, r.completion] for r in rollouts))
