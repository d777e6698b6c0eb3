"""Generation benchmark: completion tokens/s of SmolLM2-135M-Instruct on GSM8K prompts, per backend and batching.

Every path generates the same N GSM8K test prompts (cp_assets.lib.evals.eval_registry.load_samples('gsm8k') + to_request, the
registry's prompt template, no system prompt), greedy, `--max-tokens` new tokens at most, through the project's
own backends (cp_assets.lib.evals.rollouts.backend_for):

  local    LocalBackend (transformers on the CPU, the model converted from the packaged GGUF to fp32 safetensors):
           batch_size 1 (one prompt at a time: the baseline), 8 and 16. Also the model load time: cold (the GGUF
           dequantized and converted into an empty cache, then loaded) vs cached (loaded from the converted copy).
  server   OpenAIBackend (chat endpoint) against servers started here on a free loopback port and stopped after:
           `transformers serve` on the same converted checkpoint, and llama.cpp's server (`python -m llama_cpp.server`,
           when llama_cpp is importable) on the packaged Q4_1 GGUF; max_concurrency 1 vs 4.
  --vllm   only with vllm installed and CUDA: VLLMBackend (offline engine, all prompts in one batch) vs `vllm serve`
           through OpenAIBackend (max_concurrency 1, 4, N), on the same converted checkpoint.

Tokens are counted the same way for every path: the completion text re-tokenized with the local SmolLM2 tokenizer
(no special tokens), because the servers return no token ids (OpenAIBackend keeps `completion_token_ids` None unless
the reply carries `token_ids`). The backend's own count is shown next to it: len(completion_token_ids) where the
Rollout has them (local, vLLM offline; these include the end-of-sequence token when one ended the completion), else
usage.completion_tokens from the server's reply (Rollout.metadata['usage']). Each timed run is one generate() call
over all N prompts, after a warm-up request that is not timed. A machine shared with other work skews the figures:
each row prints the 1-minute load average, and CPU seconds (this process + the server process) beside wall time.

Threads: every path runs on `--threads` CPU threads (default 1; 0 = torch's default, one per core). With 2 torch
threads on this shared 2-core machine, single-prompt decoding collapsed from ~15-17 to ~3 tokens/s whenever another
process held a core (OpenMP threads spin at every barrier of every small op), for the local backend and `transformers
serve` alike, while batched runs suffered much less: that would measure the neighbours, not batching.

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/generate.py
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import _common as C

os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF conversion's and the weight loader's progress bars

MODEL_ID = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parents[1]
# only --vllm passes the prompts to a GPU engine: bf16 there (vLLM's fast attention kernels need 16-bit weights)
VLLM_DTYPE = "bfloat16"


@dataclass
class Result:
    path: str
    setting: str
    n: int
    tokens: int  # re-tokenized completions
    reported: int | None  # the backend's own count (token ids, else usage), None where it gives neither
    prompt: int | None  # prompt tokens the backend says it saw (prompt_token_ids, else usage.prompt_tokens)
    wall: float
    cpu: float
    load: str
    finish: dict = field(default_factory=dict)
    same: int | None = None  # completions identical to the baseline's (local batch_size 1)
    texts: list[str] = field(default_factory=list, repr=False)
    note: str = ""

    @property
    def tps(self) -> float:
        return self.tokens / self.wall if self.wall else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16, help="GSM8K test prompts (default 16: the first N rows)")
    ap.add_argument("--max-tokens", type=int, default=64, help="max new tokens per completion (default 64)")
    ap.add_argument("--batch-sizes", default="8,16", help="local batch sizes besides 1 (default 8,16)")
    ap.add_argument("--concurrency", default="1,4", help="OpenAI-client max_concurrency values (default 1,4)")
    ap.add_argument("--no-logprobs", action="store_true",
                    help="do not ask for logprobs (default: ask, as the rollouts asset does: SamplingParams default)")
    ap.add_argument("--skip-local", action="store_true", help="skip the local backend section")
    ap.add_argument("--skip-server", action="store_true", help="skip the loopback servers section")
    ap.add_argument("--skip-cold", action="store_true",
                    help="skip the cold load (GGUF -> safetensors conversion into an empty cache, ~20-40 s)")
    ap.add_argument("--servers", default="transformers,llama_cpp",
                    help="server kinds, comma-separated: transformers, transformers-cb (--continuous-batching), "
                         "llama_cpp (default transformers,llama_cpp; a kind that cannot run here is skipped)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for every path: torch.set_num_threads here, OMP_NUM_THREADS for transformers "
                         "serve, --n_threads for llama.cpp (default 1, see the README; 0 = torch's own default, as "
                         "the project runs, and the same number for llama.cpp)")
    ap.add_argument("--vllm", action="store_true",
                    help="add the vLLM section (offline engine vs `vllm serve`); runs only with vllm + CUDA")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    args = ap.parse_args()
    if args.n < 1 or args.max_tokens < 1:
        ap.error("--n and --max-tokens must be at least 1")
    try:
        args.batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
        args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        ap.error("--batch-sizes and --concurrency take comma-separated integers")
    args.servers = [x.strip() for x in args.servers.split(",") if x.strip()]
    unknown = set(args.servers) - {"transformers", "transformers-cb", "llama_cpp"}
    if unknown:
        ap.error(f"unknown server kind(s) {sorted(unknown)}")

    C.install_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="cprox_bench_generate_"))
    procs: list[subprocess.Popen] = []
    try:
        return run(args, tmp, procs)
    finally:
        for p in procs:
            if p.poll() is None:
                from cp_assets_tests.servers import stop_server

                stop_server(p)
        if args.keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# -- helpers -----------------------------------------------------------------------------------------------------

def load1() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def start_server(name: str, argv_for_port, served: str, log_dir: Path, procs: list, timeout_s: float = 300,
                 env: dict | None = None):
    """cp_assets_tests/servers.py's approach: a subprocess on a free loopback port, ready when GET /v1/models
    answers 200. Returns (base_url, served name, proc, seconds to ready)."""
    import httpx

    from cp_assets_tests.servers import free_port, stop_server

    port = free_port()
    log = log_dir / f"{name}-server.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"} | (
        env or {})
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv_for_port(port), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env)
    procs.append(proc)
    base_url = f"http://127.0.0.1:{port}/v1"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.perf_counter() - t0 > timeout_s:
            stop_server(proc)
            raise RuntimeError(f"{name} server not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    return base_url, served, proc, time.perf_counter() - t0


def timed_generate(backend, requests, params, tokenizer, path: str, setting: str, server_pid: int | None = None,
                   note: str = "") -> Result:
    import collections

    order = {r.sample_id: i for i, r in enumerate(requests)}
    c0 = C.cpu_seconds() + (C._proc_cpu(server_pid, with_children=True)[1] if server_pid else 0.0)
    t0 = time.perf_counter()
    rollouts = list(backend.generate(requests, params))
    wall = time.perf_counter() - t0
    cpu = C.cpu_seconds() + (C._proc_cpu(server_pid, with_children=True)[1] if server_pid else 0.0) - c0
    if len(rollouts) != len(requests):
        raise RuntimeError(f"{path} {setting}: {len(rollouts)} rollouts for {len(requests)} requests")
    rollouts.sort(key=lambda r: order[r.sample_id])
    texts = [r.completion for r in rollouts]
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    reported = 0
    for r in rollouts:
        if r.completion_token_ids is not None:
            reported += len(r.completion_token_ids)
        elif (r.metadata.get("usage") or {}).get("completion_tokens") is not None:
            reported += r.metadata["usage"]["completion_tokens"]
        else:
            reported = None
            break
    prompt = 0
    for r in rollouts:
        if r.prompt_token_ids is not None:
            prompt += len(r.prompt_token_ids)
        elif (r.metadata.get("usage") or {}).get("prompt_tokens") is not None:
            prompt += r.metadata["usage"]["prompt_tokens"]
        else:
            prompt = None
            break
    finish = dict(collections.Counter(r.finish_reason for r in rollouts))
    return Result(path, setting, len(rollouts), tokens, reported, prompt, wall, cpu, load1(), finish, texts=texts,
                  note=note)


def warm_up(backend, request, params) -> float:
    t0 = time.perf_counter()
    list(backend.generate([request], params.model_copy(update={"max_tokens": 8})))
    return time.perf_counter() - t0


def report(rows: list[Result], baseline: Result | None, title: str) -> None:
    def f(x, nd=1):
        return "" if x is None else f"{x:,.{nd}f}"

    out = []
    for r in rows:
        single = next((b for b in rows if b.path == r.path and b.setting.endswith(" 1")), None)
        out.append([r.path, r.setting, r.n, "" if r.prompt is None else f"{r.prompt:,}", f"{r.tokens:,}",
                    "" if r.reported is None else f"{r.reported:,}",
                    f(r.wall, 2), f(r.tps), f(r.tps / single.tps, 2) + "x" if single else "",
                    f(r.tps / baseline.tps, 2) + "x" if baseline else "", f(r.cpu, 1),
                    f(r.tokens / r.cpu, 1) if r.cpu > 0 else "",
                    "" if r.same is None else f"{r.same}/{r.n}",
                    " ".join(f"{k}:{v}" for k, v in sorted(r.finish.items())), r.load])
    print(f"\n{title}\n")
    print(C.table(["path", "setting", "prompts", "prompt tok", "tokens", "reported", "wall s", "tokens/s", "vs single",
                   "vs local bs1", "CPU s", "tok/CPU-s", "= local bs1", "finish", "load1"], out,
                  align="llrrrrrrrrrrrll"))
    for r in rows:
        if r.note:
            print(f"  {r.path} {r.setting}: {r.note}")


# -- the run -------------------------------------------------------------------------------------------------------

def run(args, tmp: Path, procs: list) -> int:
    import torch
    import transformers
    from transformers import AutoTokenizer

    from cp_assets.lib.core import settings
    from cp_assets.lib.evals.backends import local as local_mod
    from cp_assets.lib.evals.eval_registry import load_evals, load_samples, to_request
    from cp_assets.lib.evals.rollouts import backend_for
    from cp_assets.lib.evals.model_registry import load_models
    from cp_assets.lib.evals.generation import SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    threads_note = (f"{args.threads} (--threads) for every path" if args.threads else
                    f"torch's default, {torch.get_num_threads()}, for every path (--threads 0)")
    print("== generation benchmark: SmolLM2-135M-Instruct, completion tokens/s per backend ==")
    spec = load_models().get(MODEL_ID)
    cache = settings.model_cache()
    cached_before = (cache / spec.id / "model.safetensors").exists()
    t0 = time.perf_counter()
    mdir = Path(local_mod.model_dir(spec))  # converts once, if the shared cache lacks it
    convert_s = None if cached_before else time.perf_counter() - t0
    tok = AutoTokenizer.from_pretrained(mdir)

    evals = load_evals()
    gsm = evals.get("gsm8k")
    samples = load_samples("gsm8k", limit=args.n)
    requests = [to_request(s, gsm) for s in samples]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, logprobs=not args.no_logprobs)
    rendered = [tok.apply_chat_template([{"role": "user", "content": r.prompt}], tokenize=False,
                                        add_generation_prompt=True) for r in requests]
    plen = [len(x) for x in tok(rendered, add_special_tokens=False)["input_ids"]]

    llama_ok = importlib.util.find_spec("llama_cpp") is not None
    versions = f"torch {torch.__version__}, transformers " \
               f"{transformers.__version__}"
    if llama_ok:
        import llama_cpp

        versions += f", llama-cpp-python {llama_cpp.__version__}"
    for line in C.machine_lines({
        "versions": versions,
        "model": f"{MODEL_ID}: {spec.gguf.package}/{spec.gguf.file} -> {mdir} (fp32 safetensors"
                 + (f", converted now in {convert_s:.1f}s)" if convert_s is not None else ", already converted)"),
        "prompts": f"{len(requests)} GSM8K test prompts (the first rows, evals.yaml template, chat-templated): "
                   f"{min(plen)}-{max(plen)} tokens, mean {sum(plen) / len(plen):.0f}",
        "decoding": f"greedy, max_tokens {params.max_tokens}, logprobs {'on' if params.logprobs else 'off'}, "
                    f"seed {params.seed}",
        "threads": threads_note,
        "tokens": "completion text re-tokenized with the SmolLM2 tokenizer (same count for every path); 'reported' "
                  "= the backend's count (token ids, else usage.completion_tokens); 'prompt tok' = the prompt "
                  "tokens the backend saw (prompt_token_ids, else usage.prompt_tokens), summed",
    }):
        print(line)

    baseline: Result | None = None
    if args.skip_local:
        print("\n-- local backend: skipped (--skip-local)")
    else:
        baseline = local_section(args, spec, requests, params, tok, tmp, local_mod, backend_for)

    if args.skip_server:
        print("\n-- OpenAI-compatible servers: skipped (--skip-server)")
    else:
        server_section(args, spec, mdir, requests, params, tok, tmp, procs, baseline, llama_ok, backend_for)

    vllm_section(args, mdir, requests, params, tok, tmp, procs, baseline, backend_for)
    return 0


def local_section(args, spec, requests, params, tok, tmp, local_mod, backend_for) -> Result:
    print("\n-- local backend (LocalBackend, transformers, CPU) --")
    loads = []
    if not args.skip_cold:
        cold_cache = tmp / "cold_cache"
        try:
            with mock.patch.dict(os.environ, {"CPROX_MODEL_CACHE": str(cold_cache)}):  # the old value comes back
                t0 = time.perf_counter()
                local_mod.model_dir(spec)
                t_conv = time.perf_counter() - t0
                local_mod.load.cache_clear()
                t0 = time.perf_counter()
                local_mod.load(spec, "cpu")
                t_load = time.perf_counter() - t0
        finally:
            local_mod.load.cache_clear()
            shutil.rmtree(cold_cache, ignore_errors=True)
            gc.collect()
        loads.append(["cold: GGUF dequantize + convert into an empty cache (model_dir)", f"{t_conv:.2f}", load1()])
        loads.append(["cold: then load the converted copy (load)", f"{t_load:.2f}", ""])
        loads.append(["cold: total", f"{t_conv + t_load:.2f}", ""])

    rows = []
    for bs in [1] + args.batch_sizes:
        b = backend_for(spec.model_copy(update={"batch_size": bs}), device="cpu")
        t0 = time.perf_counter()
        b.model_and_tokenizer  # noqa: B018 - load outside the timed run
        what = "cached: load from the converted copy" if bs == 1 else "cached: load again"
        loads.append([f"{what} (spec with batch_size {bs})", f"{time.perf_counter() - t0:.2f}", load1()])
        w = warm_up(b, requests[0], params)
        r = timed_generate(b, requests, params, tok, "local", f"batch_size {bs}", note=f"warm-up {w:.1f}s untimed")
        rows.append(r)
        print(f"  local batch_size {bs:>2}: {r.wall:6.1f}s  {r.tps:6.1f} tokens/s  (load1 {r.load})", flush=True)
    print()
    print(C.table(["model load", "s", "load1"], loads))
    print("  (local.load is lru_cached on the whole ModelSpec: specs that differ only in batch_size load the weights "
          "again)")
    base = rows[0]
    for r in rows:
        r.same = sum(a == b for a, b in zip(r.texts, base.texts))
    report(rows, base, f"local backend: N = {len(requests)} prompts, one generate() call each; baseline = batch_size 1")
    for r in rows[1:]:
        print(f"ratio batched/single, batch_size {r.setting.split()[-1]}: {r.tps / base.tps:.2f}x tokens/s")
    local_mod.load.cache_clear()
    gc.collect()
    return base


def server_section(args, spec, mdir, requests, params, tok, tmp, procs, baseline, llama_ok, backend_for) -> None:
    import torch

    from cp_assets.lib.evals.model_registry import ModelSpec
    from cp_assets_tests.servers import missing, stop_server

    print("\n-- OpenAI-compatible servers on loopback (OpenAIBackend, chat endpoint) --")
    threads = args.threads or torch.get_num_threads()
    tf_env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    kinds = []
    for kind in args.servers:
        if kind.startswith("transformers"):
            gone = missing("fastapi", "uvicorn")
            if gone:
                print(f"{kind}: skipped ({gone} missing: pip install 'transformers[serving]')")
                continue
            cb = ["--continuous-batching"] if kind == "transformers-cb" else []
            kinds.append((f"transformers serve{' --continuous-batching' if cb else ''}", kind, str(mdir), tf_env,
                          lambda port, cb=cb: [sys.executable, "-m", "transformers.cli.transformers", "serve",
                                               str(mdir), "--host", "127.0.0.1", "--port", str(port), "--device",
                                               "cpu", *cb],
                          "continuous batching (paged attention)" if cb else
                          "no: one inference thread per model, requests run one at a time"))
        else:
            gone = missing("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
                           "pydantic_settings")
            if gone:
                print(f"llama_cpp: skipped ({gone} missing: pip install 'llama-cpp-python[server]', "
                      f"`make install-llama`)")
                continue
            gguf = spec.gguf_path()
            kinds.append((f"llama.cpp server (Q4_1 GGUF, {threads} threads)", kind, "smollm2", {},
                          lambda port: [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
                                        "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                                        "--n_ctx", "2048", "--n_threads", str(threads),
                                        "--n_threads_batch", str(threads), "--verbose", "false"],
                          "no: one Llama instance behind a lock, requests run one at a time"))

    rows, starts = [], []
    for label, kind, served, env, argv, batches in kinds:
        try:
            base_url, served, proc, ready = start_server(kind, argv, served, tmp, procs, env=env)
        except RuntimeError as exc:
            print(f"{label}: could not start: {exc}")
            continue
        try:
            sspec = ModelSpec(id=f"bench-{kind.replace('_', '-')}", backend="openai", base_url=base_url,
                              model=served, max_retries=1, timeout_s=600)
            w = warm_up(backend_for(sspec), requests[0], params)
            starts.append([label, f"{ready:.1f}", f"{w:.1f}", batches])
            for c in args.concurrency:
                b = backend_for(sspec.model_copy(update={"max_concurrency": c}))
                r = timed_generate(b, requests, params, tok, label, f"max_concurrency {c}", server_pid=proc.pid)
                r.same = sum(a == x for a, x in zip(r.texts, baseline.texts)) if baseline else None
                rows.append(r)
                print(f"  {label} max_concurrency {c}: {r.wall:6.1f}s  {r.tps:6.1f} tokens/s  (load1 {r.load})",
                      flush=True)
        finally:
            stop_server(proc)
    if starts:
        print()
        print(C.table(["server", "ready s", "warm-up s", "batches concurrent requests server-side?"], starts,
                      align="lrrl"))
    if rows:
        report(rows, baseline, f"servers: N = {len(requests)} prompts; 'vs single' = the same server at "
                               f"max_concurrency 1; CPU s = this process + the server process")
        for label in dict.fromkeys(r.path for r in rows):
            mine = [r for r in rows if r.path == label]
            for r in mine[1:]:
                print(f"ratio {label}: {r.setting} / {mine[0].setting} = {r.tps / mine[0].tps:.2f}x tokens/s")


def vllm_section(args, mdir, requests, params, tok, tmp, procs, baseline, backend_for) -> None:
    import torch

    why = []
    if not args.vllm:
        why.append("--vllm not given")
    if importlib.util.find_spec("vllm") is None:
        why.append("vllm is not installed (pip install -e '.[gpu]' on a CUDA machine)")
    if not torch.cuda.is_available():
        why.append(f"CUDA is not available to torch {torch.__version__}")
    if why:
        print(f"\n-- vLLM: skipped ({'; '.join(why)})")
        return
    from cp_assets.lib.evals.model_registry import ModelSpec
    from cp_assets_tests.servers import stop_server

    print(f"\n-- vLLM on {torch.cuda.get_device_name(0)} (dtype {VLLM_DTYPE}, max_model_len 2048) --")
    rows = []
    # the server first (a subprocess, whose GPU memory is freed when it exits), then the in-process engine
    exe = Path(sys.executable).with_name("vllm")
    head = [str(exe), "serve", str(mdir)] if exe.exists() else [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(mdir)]
    try:
        base_url, served, proc, ready = start_server(
            "vllm", lambda port: head + ["--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                                         "--dtype", VLLM_DTYPE, "--max-model-len", "2048",
                                         "--gpu-memory-utilization", "0.4"],
            "smollm2", tmp, procs, timeout_s=900)
    except RuntimeError as exc:
        print(f"vllm serve: could not start: {exc}")
    else:
        try:
            sspec = ModelSpec(id="bench-vllm-serve", backend="openai", base_url=base_url, model=served,
                              max_retries=1, timeout_s=600)
            w = warm_up(backend_for(sspec), requests[0], params)
            print(f"vllm serve ready in {ready:.1f}s, warm-up {w:.1f}s; batches concurrent requests server-side "
                  f"(continuous batching)")
            for c in dict.fromkeys(args.concurrency + [len(requests)]):
                b = backend_for(sspec.model_copy(update={"max_concurrency": c}))
                r = timed_generate(b, requests, params, tok, "vllm serve", f"max_concurrency {c}",
                                   server_pid=proc.pid)
                rows.append(r)
                print(f"  vllm serve max_concurrency {c}: {r.wall:6.1f}s  {r.tps:7.1f} tokens/s", flush=True)
        finally:
            stop_server(proc)
    espec = ModelSpec(id="bench-vllm-offline", backend="vllm", path=str(mdir), dtype=VLLM_DTYPE,
                      batch_size=len(requests), context_length=2048, gpu_memory_utilization=0.4)
    b = backend_for(espec)
    t0 = time.perf_counter()
    b.engine  # noqa: B018 - engine start outside the timed run
    start_s = time.perf_counter() - t0
    w = warm_up(b, requests[0], params)
    r = timed_generate(b, requests, params, tok, "vllm offline engine", f"batch_size {len(requests)}",
                       note=f"engine start {start_s:.1f}s, warm-up {w:.1f}s untimed")
    rows.insert(0, r)
    print(f"  vllm offline batch_size {len(requests)}: {r.wall:6.1f}s  {r.tps:7.1f} tokens/s", flush=True)
    for x in rows:
        x.same = sum(a == y for a, y in zip(x.texts, rows[0].texts))
    report(rows, baseline, f"vLLM: N = {len(requests)} prompts; '= local bs1' column here = same text as the "
                           f"vLLM offline engine")
    off = rows[0]
    for x in rows[1:]:
        print(f"ratio vllm serve {x.setting} / offline engine: {x.tps / off.tps:.2f}x tokens/s")


if __name__ == "__main__":
    sys.exit(main())
