"""The one place lib-rendered metadata (`cp_assets.lib.core.metadata`) becomes Dagster metadata."""

from __future__ import annotations

from typing import Any, Mapping

import dagster as dg

from cp_assets.lib.core.metadata import FilePath, Json, Markdown


def value(v: Any) -> Any:
    if isinstance(v, Markdown):
        return dg.MetadataValue.md(str(v))
    if isinstance(v, FilePath):
        return dg.MetadataValue.path(str(v))
    if isinstance(v, Json):
        return dg.MetadataValue.json(v.value)
    return v


def metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Dagster metadata from a lib dict; None values are left out."""
    return {k: value(v) for k, v in meta.items() if v is not None}


def result(meta: Mapping[str, Any], **kwargs) -> dg.MaterializeResult:
    """`MaterializeResult` of lib-rendered metadata (kwargs: data_version, check_results, ...)."""
    return dg.MaterializeResult(metadata=metadata(meta), **kwargs)
