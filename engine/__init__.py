"""dyno's inference engine: paged KV cache, continuous batching, exact to the token.

The public names load on first use: `import engine.args` (the flag dataclass, which the tuner
and the dashboard read) must not pull in torch and transformers.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ArgsError": "engine.args", "EngineArgs": "engine.args",
    "AsyncLLM": "engine.async_llm", "EngineDeadError": "engine.async_llm",
    "LLM": "engine.llm", "LLMEngine": "engine.llm_engine",
    "OutputKind": "engine.output_processor",
    "CompletionOutput": "engine.outputs", "Logprob": "engine.outputs", "RequestOutput": "engine.outputs",
    "SamplingParams": "engine.sampling_params",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
