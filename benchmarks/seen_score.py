"""seen_score on the hand-made dev set: the weights chosen on its dev half, AUROCs on both halves, against plain search
and plain tracing; and the evidence's speed.

Reads an existing CPROX_HOME (default .cprox) whose splits are embedded and indexed: the demo corpus of corpora.yaml
(`make lab`'s `cprox materialize`; the dev set quotes its pretrain split). Writes nothing there.
  1. gathers the evidence (`cp_assets.lib.provenance.evidence.gather`) of every dev-set sentence (timed);
  2. chooses C, the weights, the intercept and the threshold on the dev half alone (`seen_score.choose_weights`);
  3. prints the AUROCs (verbatim vs invented, paraphrased vs invented) of the hybrid score, plain search, plain
     tracing and each feature: on the dev half out-of-fold (cross-validated) and with the shipped weights, and on the
     test half with the shipped weights (scored once);
  4. writes the dev half's features to cp_assets_tests/data/seen_dev_features.json (the tests re-run the choice on
     them);
  5. exits 1 when the shipped constants (seen_score.WEIGHTS, INTERCEPT, THRESHOLD) are not the ones the dev half gives.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/seen_score.py [--home .cprox]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from cp_assets.lib.core import settings

DEV_SET = Path(__file__).resolve().parents[1] / "cp_assets_tests" / "data" / "seen_sentences.json"
DEV_FEATURES = DEV_SET.with_name("seen_dev_features.json")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=str(settings.home()))
    ap.add_argument("--save", type=Path, help="write the features and labels here (.npz)")
    ap.add_argument("--dev-only", action="store_true", help="do not score the test half (while designing features)")
    args = ap.parse_args()
    os.environ["CPROX_HOME"] = str(Path(args.home).resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np
    from benchmarks._common import machine_lines
    from cp_assets.lib.corpus.encoder import model_slug
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.provenance import seen_score as ss
    from cp_assets.lib.provenance.bm25_chunks import Bm25Chunks
    from cp_assets.lib.provenance.evidence import gather

    items = json.loads(DEV_SET.read_text())["items"]
    store = PgStore(url=settings.database_url())
    splits = store.embedded_splits(model_slug(settings.embed_model()))
    print("\n".join(machine_lines()))
    print(f"dev set {DEV_SET.name}: {len(items)} sentences; splits {splits} under {settings.home()}")
    t0 = time.perf_counter()
    bm25 = Bm25Chunks(store, splits)
    t1 = time.perf_counter()
    evs = gather(store, [it["text"] for it in items], bm25=bm25)
    t2 = time.perf_counter()
    print(f"BM25 over {len(bm25):,} chunks built in {t1 - t0:.1f} s; evidence of {len(items)} sentences in "
          f"{t2 - t1:.1f} s ({(t2 - t1) / len(items) * 1000:.0f} ms each)")
    x = np.array([e.features() for e in evs])
    kinds = np.array([it["kind"] for it in items])
    dev = np.array([it["half"] == "dev" for it in items])
    if args.save:
        np.savez(args.save, x=x, kinds=kinds, dev=dev)
    # the dev half's features, kept with the tests: test_explain.py checks that choose_weights gives the shipped
    # constants from them (the test half's stay out of the repository's tests)
    DEV_FEATURES.write_text(json.dumps({"features": list(ss.FEATURES), "home": str(settings.home()),
                                        "rows": [{"kind": str(k), "x": [round(float(v), 6) for v in row]}
                                                 for k, row in zip(kinds[dev], x[dev])]}, indent=0) + "\n")
    chosen = ss.choose_weights(x[dev], kinds[dev])
    print(f"chosen on the dev half: features {chosen['features']}, trained on {chosen['train_on']}, C {chosen['C']}: "
          f"weights {chosen['weights']}, intercept {chosen['intercept']}, threshold {chosen['threshold']}")
    print("cross-validated AUROC on the dev half (verbatim, paraphrased), best C per features x positives:")
    for subset in ss.SUBSETS:
        for train_on in ss.TRAIN_ON:
            c, (a, b) = max(((c, chosen["cv"][(subset, train_on, c)]) for c in ss.C_GRID), key=lambda t: sum(t[1]))
            print(f"  {'+'.join(subset):<75} {train_on:<12} C {c:<5} {a:.3f} {b:.3f}")
    halves = [("dev half (shipped weights)", dev)]
    if not args.dev_only:
        halves.append(("test half (shipped weights, scored once)", ~dev))
    for name, mask in halves:
        print(f"\n{name}")
        print(f"{'score':<22}{'verbatim':>10}{'paraphrased':>13}   n (verbatim / paraphrased / invented)")
        for r in ss.report(x[mask], kinds[mask]):
            print(f"{r['score']:<22}{r['verbatim']:>10.3f}{r['paraphrased']:>13.3f}   "
                  f"{r['n_verbatim']} / {r['n_paraphrased']} / {r['n_invented']}")
    shipped = {"weights": ss.WEIGHTS, "intercept": ss.INTERCEPT, "threshold": ss.THRESHOLD}
    same = all(np.allclose(shipped[k], chosen[k], atol=0.011) for k in shipped)
    print(f"\nshipped constants {'are' if same else 'are NOT'} the dev half's choice: {shipped}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
