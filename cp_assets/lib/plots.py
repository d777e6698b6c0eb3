"""Small matplotlib plots saved as PNG files, for asset metadata (the UI shows them as images)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def histogram(values: Sequence[float], path: Path, title: str, xlabel: str, bins: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.hist(list(values), bins=bins, color="#4a7ab5")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_image(path: Path, alt: str) -> str:
    """Markdown embedding the PNG inline (data URI), so the UI shows it without a file server."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"
