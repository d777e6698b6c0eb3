"""Pictures of a cluster tree for asset metadata: an interactive treemap + sunburst (plotly HTML, opens offline) and a
static nested treemap (PNG, matplotlib + squarify), and per-cluster rates with Wilson intervals (`core.stats.wilson`).

Nodes come in as plain dicts: node_id, parent_id, size, name, description (optional), and optionally `value`
(a rate shown as colour, e.g. the rollout error rate) with `n` (its sample count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cp_assets.lib.core.plots import pyplot
from cp_assets.lib.core.stats import wilson


def _label(node: dict, width: int = 28) -> str:
    name = node.get("name") or node["node_id"]
    return name if len(name) <= width else name[:width - 1] + "\u2026"


def tree_html(nodes: Sequence[dict], path: Path, title: str) -> Path:
    """One self-contained HTML file (plotly.js inlined: works offline) with a treemap and a sunburst of the tree."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [n["node_id"] for n in nodes]
    common = dict(
        ids=ids, labels=[_label(n, 40) for n in nodes], parents=[n["parent_id"] or "" for n in nodes],
        values=[n["size"] for n in nodes], branchvalues="total",
        customdata=[[n.get("description") or "", n["size"], "" if n.get("value") is None else
                     f"{n['value']:.2f} (n={n.get('n', 0)})"] for n in nodes],
        hovertemplate="<b>%{label}</b><br>%{customdata[0]}<br>chunks: %{customdata[1]}<br>rate: %{customdata[2]}"
                      "<extra></extra>")
    colored = any(n.get("value") is not None for n in nodes)
    if colored:
        common["marker"] = dict(colors=[np.nan if n.get("value") is None else n["value"] for n in nodes],
                                colorscale="RdYlGn_r", cmin=0, cmax=1, showscale=True)
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "treemap"}, {"type": "sunburst"}]],
                        subplot_titles=("treemap (area = chunks)", "sunburst"))
    fig.add_trace(go.Treemap(**common, maxdepth=3), row=1, col=1)
    fig.add_trace(go.Sunburst(**common, maxdepth=3), row=1, col=2)
    fig.update_layout(title=title, height=700, margin=dict(t=60, l=10, r=10, b=10))
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def tree_png(nodes: Sequence[dict], path: Path, title: str, max_depth: int = 2) -> Path:
    """Nested treemap: the root's children as blocks, their children inside (area = chunks), labelled by name."""
    import squarify

    path.parent.mkdir(parents=True, exist_ok=True)
    kids: dict[str | None, list[dict]] = {}
    for n in nodes:
        kids.setdefault(n["parent_id"], []).append(n)
    roots = kids.get(None, [])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 6), dpi=100)
    cmap = plt.get_cmap("tab20")

    def draw(parent: dict, x: float, y: float, w: float, h: float, depth: int, color) -> None:
        children = sorted(kids.get(parent["node_id"], []), key=lambda c: -c["size"])
        if depth >= max_depth or not children or w < 1e-3 or h < 1e-3:
            return
        sizes = squarify.normalize_sizes([c["size"] for c in children], w, h)
        for i, (c, r) in enumerate(zip(children, squarify.squarify(sizes, x, y, w, h))):
            col = cmap(i % 20) if depth == 0 else color
            alpha = 0.85 if depth == 0 else 0.55
            ax.add_patch(plt.Rectangle((r["x"], r["y"]), r["dx"], r["dy"], facecolor=col, alpha=alpha,
                                       edgecolor="white", linewidth=2.5 - depth))
            if depth + 1 >= max_depth or not kids.get(c["node_id"]):
                if r["dx"] * r["dy"] > 0.012 * w * h or depth == 0:
                    ax.text(r["x"] + r["dx"] / 2, r["y"] + r["dy"] / 2, f"{_label(c, 22)}\n{c['size']:,}",
                            ha="center", va="center", fontsize=7 if depth else 8, wrap=True)
            elif depth == 0:
                ax.text(r["x"] + 0.01, r["y"] + r["dy"] - 0.01, _label(c, 30), ha="left", va="top", fontsize=8,
                        weight="bold")
            draw(c, r["x"], r["y"], r["dx"], r["dy"], depth + 1, col)

    for root in roots:
        draw(root, 0, 0, 1, 1, 0, None)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def rate_bars(labels: Sequence[str], k: Sequence[int], n: Sequence[int], path: Path, title: str,
              ylabel: str) -> Path:
    """A bar per cluster: k/n with its 95% Wilson interval, annotated with n."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rates = [a / b if b else np.nan for a, b in zip(k, n)]
    cis = [wilson(a, b) for a, b in zip(k, n)]
    lo = [r - c[0] if b else 0 for r, c, b in zip(rates, cis, n)]
    hi = [c[1] - r if b else 0 for r, c, b in zip(rates, cis, n)]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(labels)), 3.6), dpi=100)
    xs = np.arange(len(labels))
    ax.bar(xs, rates, yerr=[lo, hi], capsize=3, color="#c0504d")
    for x, r, b in zip(xs, rates, n):
        ax.annotate(f"n={b}", (x, 0 if np.isnan(r) else r), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, [_label({"node_id": s, "name": s}, 24) for s in labels], rotation=35, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
