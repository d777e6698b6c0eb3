"""`cprox rollout` and `cprox models`: one generation from any registered model, and the models registry.

  cprox rollout --model ID "PROMPT" [--system "..."] [--stream] [--max-tokens N] [--temperature T] [--json]
  cprox models [--json]
  cprox rollouts --eval SET [--eval ...] --model ID [--model ...] [--limit N] [--max-tokens N]
      materialize eval_samples + rollouts in-process (recorded in DAGSTER_HOME) and print accuracy per partition
"""

import json
import sys

from rich.console import Console

from cp_assets.cli.tables import show, yes_no

err = Console(stderr=True)


def cmd_rollout(args) -> int:
    from cp_assets.lib.evals.generation import GenerationRequest, SamplingParams
    from cp_assets.lib.evals.model_registry import load_models
    from cp_assets.lib.evals.rollouts import backend_for

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
    from cp_assets.lib.evals.model_registry import load_models

    reg = load_models()
    rows = [spec.model_dump(exclude_defaults=True) | {"id": spec.id, "backend": spec.backend}
            for spec in reg.models.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    show(["id", "backend", "source", "description"],
         [[spec.id, spec.backend, spec.path or (spec.gguf and f"gguf: {spec.gguf.package}")
           or f"{spec.base_url} ({spec.served_name})", spec.description] for spec in reg.models.values()],
         f"models ({reg.source})")
    return 0


def cmd_rollouts(args) -> int:
    import dagster as dg

    from cp_assets.cli.common import instance, materialize
    from cp_assets.lib.evals.eval_registry import load_evals

    inst = instance()
    eval_sets = args.eval or load_evals().names()
    models = list(args.model)
    if args.trained:
        from cp_assets.lib.evals.model_registry import load_models
        from cp_assets.lib.memorization.experiments import lab_model

        models += [m for m, spec in load_models().models.items() if spec.backend == "tiny" and m not in models
                   and lab_model(m)]
    if not models:
        err.print("no models: name them with --model, or use --trained after `cprox train`")
        return 2
    config = {"limit": args.limit, "max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    rows, failed = [], False
    for eval_set in eval_sets:
        failed |= not materialize(inst, ["eval_samples"], eval_set, args.log_level).ok
        for model in models:
            key = dg.MultiPartitionKey({"eval_set": eval_set, "model": model})
            res = materialize(inst, ["rollouts"], key, args.log_level, {"rollouts": {"config": config}})
            md = res.metadata.get("rollouts", {})
            failed |= not res.ok
            rows.append([eval_set, model, yes_no(res.ok), str(md.get("rollouts", "")), str(md.get("generated", "")),
                         str(md.get("skipped_existing", "")), str(md.get("accuracy", "")),
                         str(md.get("tokens_per_s", "")), f"{res.seconds:.1f}"])
    show(["eval set", "model", "ok", "rollouts", "generated", "skipped", "accuracy", "tokens/s", "seconds"], rows,
         "rollouts", stderr=True)
    return 1 if failed else 0


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

    x = sub.add_parser("rollouts", help="materialize eval_samples + rollouts for eval sets x models, in-process")
    x.add_argument("--eval", action="append", help="repeatable; default: every eval set in evals.yaml")
    x.add_argument("--model", action="append", default=[], help="repeatable model id")
    x.add_argument("--trained", action="store_true", help="also every model trained here (`cprox train`)")
    x.add_argument("--limit", type=int, default=None, help="first N samples of each eval set")
    x.add_argument("--max-tokens", type=int, default=256)
    x.add_argument("--temperature", type=float, default=0.0)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--log-level", default="INFO")
    x.set_defaults(fn=cmd_rollouts)

    m = sub.add_parser("models", help="the models registry")
    m.add_argument("--json", action="store_true")
    m.set_defaults(fn=cmd_models)
