"""`cprox rollout` and `cprox models`: one generation from any registered model, and the models registry.

  cprox rollout --model ID "PROMPT" [--system "..."] [--stream] [--max-tokens N] [--temperature T] [--json]
  cprox models [--json]
"""

import json
import sys

from rich.console import Console
from rich.table import Table

err = Console(stderr=True)
out = Console()


def cmd_rollout(args) -> int:
    from cp_assets.lib.generate import backend_for
    from cp_assets.lib.models import load_models
    from cp_assets.lib.rollouts import GenerationRequest, SamplingParams

    prompt = args.prompt if args.prompt != "-" else sys.stdin.read()
    backend = backend_for(load_models().get(args.model))
    req = GenerationRequest(sample_id="cli", prompt=prompt, system_prompt=args.system)
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                            seed=args.seed)
    if args.stream:
        def show(piece: str) -> None:
            (sys.stderr if args.json else sys.stdout).write(piece)
            (sys.stderr if args.json else sys.stdout).flush()

        rollout = backend.stream(req, params, show)
        (sys.stderr if args.json else sys.stdout).write("\n")
    else:
        with err.status(f"generating with {args.model}...", spinner="dots"):
            rollout = next(iter(backend.generate([req], params)))
        if not args.json:
            print(rollout.completion)
    if args.json:
        print(rollout.model_dump_json())
    else:
        n = rollout.n_completion_tokens
        err.print(f"[dim]{args.model} ({rollout.backend}): {n if n is not None else '?'} tokens, "
                  f"{rollout.latency_s:.2f}s, finish {rollout.finish_reason}[/dim]")
    return 0


def cmd_models(args) -> int:
    from cp_assets.lib.models import load_models

    reg = load_models()
    rows = [spec.model_dump(exclude_defaults=True) | {"id": spec.id, "backend": spec.backend}
            for spec in reg.models.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title=f"models ({reg.source})")
    for col in ("id", "backend", "source", "description"):
        table.add_column(col, overflow="fold")
    for spec in reg.models.values():
        source = spec.path or (spec.gguf and f"gguf: {spec.gguf.package}") or f"{spec.base_url} ({spec.served_name})"
        table.add_row(spec.id, spec.backend, source, spec.description)
    out.print(table)
    return 0


def add_parsers(sub) -> None:
    r = sub.add_parser("rollout", help="generate one completion with a registered model")
    r.add_argument("prompt", help="the prompt ('-' reads stdin)")
    r.add_argument("--model", required=True, help="a model id from models.yaml (cprox models)")
    r.add_argument("--system", default=None, help="system prompt")
    r.add_argument("--stream", action="store_true", help="print tokens as they come")
    r.add_argument("--max-tokens", type=int, default=256)
    r.add_argument("--temperature", type=float, default=0.0)
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true", help="print the Rollout record as one JSON object")
    r.set_defaults(fn=cmd_rollout)

    m = sub.add_parser("models", help="the models registry")
    m.add_argument("--json", action="store_true")
    m.set_defaults(fn=cmd_models)
