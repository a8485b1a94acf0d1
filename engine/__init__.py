"""dyno's inference engine: paged KV cache, continuous batching, exact to the token."""

from engine.args import ArgsError, EngineArgs
from engine.async_llm import AsyncLLM, EngineDeadError
from engine.llm import LLM
from engine.llm_engine import LLMEngine
from engine.output_processor import OutputKind
from engine.outputs import CompletionOutput, Logprob, RequestOutput
from engine.sampling_params import SamplingParams

__all__ = ["ArgsError", "AsyncLLM", "EngineDeadError", "CompletionOutput", "EngineArgs", "LLM", "LLMEngine", "Logprob",
           "OutputKind", "RequestOutput", "SamplingParams"]
