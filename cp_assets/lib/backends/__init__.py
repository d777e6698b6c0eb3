"""Generation backends behind one interface (`cp_assets.lib.rollouts.Backend`): local transformers, OpenAI-compatible
HTTP servers, and vLLM's offline engine. `cp_assets.lib.generate.backend_for(spec)` picks one."""
