"""`cprox rollout` (streamed text, the Rollout as JSON) and `cprox models` (the registry as JSON), on real SmolLM2."""

import json

from cp_assets.cli.main import main
from cp_assets.lib.evals.generation import Rollout


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {r["id"]: r for r in rows}
    assert by["smollm2-135m-instruct"]["backend"] == "local" and by["gpt-4o-mini"]["backend"] == "openai"
    assert by["gpt-4o-mini"]["api_key_env"] == "OPENAI_API_KEY" and "sk-" not in json.dumps(rows)


def test_rollout_json_and_stream(capsys):
    args = ["rollout", "--model", "smollm2-135m-instruct", "What is the capital of France?", "--max-tokens", "12"]
    assert main(args + ["--json"]) == 0
    r = Rollout.model_validate_json(capsys.readouterr().out)
    assert "Paris" in r.completion and r.model_id == "smollm2-135m-instruct" and r.logprobs
    assert main(args + ["--stream"]) == 0
    streamed = capsys.readouterr()
    assert streamed.out.strip() == r.completion.strip() and "finish" in streamed.err
    assert main(args + ["--system", "You are a pirate.", "--json"]) == 0
    with_system = Rollout.model_validate_json(capsys.readouterr().out)
    assert with_system.system_prompt == "You are a pirate." and "You are a pirate." in with_system.rendered_prompt
    assert with_system.params_hash != r.params_hash


def test_rollout_unknown_model_is_a_clear_error(capsys):
    assert main(["rollout", "--model", "nope", "hi"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
