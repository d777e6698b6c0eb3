"""Small matplotlib plots saved as PNG files, for asset metadata (the UI shows them as images)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Sequence



def pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use (it costs ~0.5 s of every process's start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def histogram(values: Sequence[float], path: Path, title: str, xlabel: str, bins: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
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


def bars(labels: Sequence[str], values: Sequence[float], path: Path, title: str, ylabel: str,
         counts: Sequence[int] | None = None) -> Path:
    """A bar per group (e.g. accuracy per difficulty level), annotated with the group size when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    xs = range(len(labels))
    ax.bar(xs, list(values), color="#4a7ab5")
    ax.set_xticks(list(xs), [str(x) for x in labels], rotation=30 if len(labels) > 6 else 0, ha="right")
    for x, v, n in zip(xs, values, counts or [None] * len(labels)):
        if n is not None:
            ax.annotate(f"n={n}", (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
