"""Plots of the proximity reports, saved as PNG for asset metadata (`plots.markdown_image` embeds them):
distances by group as box + strip plots in one panel per split, and y-vs-bin lines (accuracy by distance bin)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cp_assets.lib.core.plots import pyplot


def box_strip(panels: dict[str, dict[object, Sequence[float]]], path: Path, title: str, xlabel: str,
              ylabel: str, seed: int = 0) -> Path:
    """One panel per key of `panels` (e.g. a split), a box per group (e.g. a level) with the points jittered over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(len(panels), 1)
    plt = pyplot()
    fig, axes = plt.subplots(1, n, figsize=(min(4.2 * n, 16), 3.4), dpi=100, squeeze=False, sharey=True)
    rng = np.random.default_rng(seed)
    for ax, (name, groups) in zip(axes[0], panels.items()):
        labels = list(groups)
        data = [list(groups[g]) for g in labels]
        ax.boxplot(data, positions=range(1, len(labels) + 1), widths=0.6, showfliers=False)
        for i, ys in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(ys)), ys, s=6, alpha=0.45, color="#4a7ab5")
        ax.set_xticks(range(1, len(labels) + 1), [str(x) for x in labels])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: Path, title: str, xlabel: str,
          ylabel: str) -> Path:
    """One marked line per series (label -> (xs, ys)), e.g. accuracy per distance quintile per model and split."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    ticks: set = set()
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", label=label)
        ticks.update(xs)
    if ticks and all(float(t).is_integer() for t in ticks):
        ax.set_xticks(sorted(ticks))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if series:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
