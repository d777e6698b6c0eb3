"""Speed of scoring one trained model on its planted items (`planted_scores.score_model`, the step of
`canary_memorization` that ranks every canary and fact among its exposure candidates), by candidate batch size.

Reads an existing CPROX_HOME whose lab is trained (`make lab` or `cprox train`): the planted items from the results
database and one run's base model and the reference model; writes nothing.
  1. per batch size (`--batches`, default 2048 256): the exposure step alone (log p of the secret and its candidates,
     `suffix_logprobs`) over every canary and fact, in seconds, and the largest difference in log p against the first
     batch size (the batch changes only the summation's order);
  2. the whole `score_model` of the run at the shipped default batch: seconds for every item.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/planted_scoring.py [--home .cprox] [--run adamw-s0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from cp_assets.lib.core import settings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=str(settings.home()))
    ap.add_argument("--run", default="adamw-s0")
    ap.add_argument("--batches", type=int, nargs="+", default=[2048, 256])
    args = ap.parse_args()
    os.environ["CPROX_HOME"] = str(Path(args.home).resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    from benchmarks._common import machine_lines
    from cp_assets.lib.memorization import experiments as ex
    from cp_assets.lib.memorization import planted_scores as ps
    from cp_assets.lib.memorization import planting
    from cp_assets.lib.reports.results_db import ResultsDB
    from cp_assets.lib.tinygpt.model import load_checkpoint

    print("\n".join(machine_lines()))
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; home {Path(args.home).resolve()}")
    plant = ex.load_experiment().plant
    with ResultsDB().connect(read_only=True) as con:
        items = planting.items_from_rows(con.execute(
            f"SELECT {', '.join(planting.PLANTED_COLUMNS)} FROM planted_items ORDER BY kind, dose, item_id").fetchall())
    model, tok = load_checkpoint(ex.run_dir(args.run, "base"))
    ranked = [it for it in items if it.fmt]
    suffixes = []
    for it in ranked:
        prefix, secret = ps.split_ids(tok, it)
        suffixes.append((prefix, ps.exposure_suffixes(tok, it, prefix, secret, plant.exposure_candidates)))
    print(f"run {args.run} ({model.config.n_layer} x {model.config.n_embd}); {len(ranked)} canaries and facts, "
          f"{plant.exposure_candidates:,} candidates each")
    first = None
    for b in args.batches:
        t = time.perf_counter()
        lps = [ps.suffix_logprobs(model, p, s, batch=b) for p, s in suffixes]
        secs = time.perf_counter() - t
        diff = 0.0 if first is None else max(float(np.abs(a - c).max()) for a, c in zip(lps, first))
        first = first or lps
        print(f"  batch {b:>5}: exposure log p {secs:.1f} s ({secs / len(ranked):.2f} s an item); max |diff| "
              f"{diff:.2e}")
    reference = load_checkpoint(ex.reference_dir())[0] if (ex.reference_dir() / "config.json").exists() else None
    t = time.perf_counter()
    ps.score_model(model, tok, items, plant, reference=reference, run=args.run, model_id=f"tiny-{args.run}",
                   log=lambda m: None)
    print(f"score_model, every item ({len(items)}), default batch: {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
