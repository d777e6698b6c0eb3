"""Generation backends behind one interface (`cp_assets.lib.evals.generation.Backend`): local transformers, OpenAI-compatible
HTTP servers, and vLLM's offline engine. `cp_assets.lib.evals.rollouts.backend_for(spec)` picks one."""
