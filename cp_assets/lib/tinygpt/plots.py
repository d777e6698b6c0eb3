"""Pictures of tiny-GPT training runs: loss against tokens, train and validation, one colour per run (attached to the
`tiny_models` asset and printed by benchmarks/train.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from cp_assets.lib.tinygpt.config import TrainResult


def loss_curves_png(results: Mapping[str, "TrainResult | Sequence[dict]"], path: str | Path,
                    title: str = "tiny GPT: loss vs tokens") -> Path:
    """Train (thin) and val (thick, markers) loss against tokens, one colour per run."""
    from cp_assets.lib.core.plots import pyplot

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = [plt.get_cmap("tab20" if len(results) > 10 else "tab10")(i) for i in range(20)]
    for i, (label, res) in enumerate(results.items()):
        rows = res.curve if hasattr(res, "curve") else list(res)
        c = colors[i % len(colors)]
        tr = [(r["tokens"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
        va = [(r["tokens"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        if tr:
            ax.plot(*zip(*tr), color=c, alpha=0.45, linewidth=1, label=f"{label} train")
        if va:
            ax.plot(*zip(*va), color=c, linewidth=2, marker="o", markersize=3, label=f"{label} val")
    ax.set(xlabel="training tokens", ylabel="loss (nats/token)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
