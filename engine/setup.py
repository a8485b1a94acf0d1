"""Start-up: resolve the model, load it, and size the KV cache. Returns what it found."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from engine.args import EngineArgs
from engine.attention import AttentionMetadata, KVCacheLayer, PrefillSpan
from engine.memory import (allocate_kv_caches, block_num_bytes, cpu_kv_budget, keep_freed_memory,
                           kv_cache_dtype, load_kv_scales, peak_rss_bytes, reset_peak_rss)
from engine.model_loader import load_model, resolve_device, resolve_dtype, resolve_quantization
from engine.model_source import load_config, resolve_model
from engine.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

_PROFILE_TOKENS = 256


@dataclass(frozen=True)
class EngineInfo:
    """Values found at start-up, for whoever needs them (never written back into the args)."""

    model_name: str
    model_path: str
    device: torch.device
    dtype: torch.dtype
    kv_cache_dtype: torch.dtype
    vocab_size: int
    max_model_len: int
    max_num_batched_tokens: int
    num_blocks: int
    eos_token_id: int | None
    load_seconds: float


@dataclass
class EngineParts:
    info: EngineInfo
    tokenizer: object | None
    model: torch.nn.Module
    kv_caches: list[KVCacheLayer]


def build_engine_parts(args: EngineArgs) -> EngineParts:
    start = time.monotonic()
    keep_freed_memory()
    files = resolve_model(args.model, revision=args.revision, code_revision=args.code_revision,
                          download_dir=args.download_dir, load_format=args.load_format,
                          trust_remote_code=args.trust_remote_code,
                          extra_config=args.model_loader_extra_config)
    hf_config = load_config(files, trust_remote_code=args.trust_remote_code)
    tokenizer = None
    if not args.skip_tokenizer_init:
        tokenizer = load_tokenizer(args.tokenizer or files.path, mode=args.tokenizer_mode,
                                   revision=args.tokenizer_revision,
                                   trust_remote_code=args.trust_remote_code)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, hf_config, device)
    dtype = resolve_quantization(args.quantization, args.dtype, dtype, device)
    model = load_model(files, hf_config, dtype, device, args.seed, args.quantization)
    max_model_len = _max_model_len(args, hf_config)
    budget = _token_budget(args, max_model_len)
    cache_dtype = kv_cache_dtype(args.kv_cache_dtype, dtype)
    num_blocks = _num_blocks(args, model, budget, cache_dtype, device)
    _check_fits(num_blocks, args.block_size, max_model_len)
    a = model.args
    scales = load_kv_scales(args.quantization_param_path, a.num_layers)
    kv_caches = allocate_kv_caches(a.num_layers, num_blocks, args.block_size, a.num_kv_heads,
                                   a.head_dim, cache_dtype, device, scales)
    info = EngineInfo(files.name, str(files.path), device, dtype, cache_dtype, a.vocab_size,
                      max_model_len, budget, num_blocks, _eos_token_id(hf_config, tokenizer),
                      time.monotonic() - start)
    logger.info("loaded %s (%s, %s) in %.1fs; KV cache: %d blocks of %d tokens",
                info.model_name, dtype, device, info.load_seconds, num_blocks, args.block_size)
    return EngineParts(info, tokenizer, model, kv_caches)


def _max_model_len(args: EngineArgs, hf_config) -> int:
    derived = getattr(hf_config, "max_position_embeddings", None) or 2048
    if args.max_model_len is None:
        return derived
    if args.max_model_len > derived:
        raise ValueError(f"--max-model-len {args.max_model_len} exceeds the model's context length "
                         f"({derived}): lower it")
    return args.max_model_len


# With the budget derived (room for the longest prompt), new prompts batch up to this many
# tokens a step: vLLM's CPU server budget. A wave of 64 prompts of 128 tokens then takes four
# steps rather than one 1.8 s step before any first token (mean TTFT at 64 streams: 2.3 s).
DERIVED_PROMPT_BATCH_TOKENS = 2048


def prompt_batch_tokens(args: EngineArgs) -> int | None:
    """The scheduler's cap on new prompt tokens per step: only where dyno chose the budget."""
    if args.max_num_batched_tokens is None and not args.enable_chunked_prefill:
        return DERIVED_PROMPT_BATCH_TOKENS
    return None


def _token_budget(args: EngineArgs, max_model_len: int) -> int:
    """vLLM's defaults: 512 tokens a step with chunked prefill, else room for the longest prompt."""
    if args.max_num_batched_tokens is not None:
        if not args.enable_chunked_prefill and args.max_num_batched_tokens < max_model_len:
            raise ValueError(f"--max-num-batched-tokens {args.max_num_batched_tokens} is below the "
                             f"context length {max_model_len}, so long prompts could never run: "
                             "raise it, lower --max-model-len, or --enable-chunked-prefill")
        return args.max_num_batched_tokens
    if args.enable_chunked_prefill:
        return max(512, args.max_num_seqs)
    return max(max_model_len, 2048, args.max_num_seqs)


def _num_blocks(args: EngineArgs, model, budget: int, cache_dtype, device) -> int:
    if args.num_gpu_blocks_override is not None:
        return args.num_gpu_blocks_override
    if device.type != "cpu":
        raise ValueError("KV cache profiling is only built for the CPU: pass --num-gpu-blocks-override")
    a = model.args
    activation_peak = _profile_activations(model, budget, args.block_size)
    free = cpu_kv_budget(args.gpu_memory_utilization, activation_peak)
    per_block = block_num_bytes(a.num_layers, args.block_size, a.num_kv_heads, a.head_dim, cache_dtype)
    if free < per_block * 2:
        raise ValueError(f"no memory is left for the KV cache at --gpu-memory-utilization "
                         f"{args.gpu_memory_utilization}: raise it or lower --max-num-batched-tokens")
    return int(free // per_block)


@torch.inference_mode()
def _profile_activations(model, budget: int, block_size: int) -> int:
    """Peak memory of one forward pass, measured on a few tokens and scaled to the token budget."""
    a = model.args
    n = min(budget, _PROFILE_TOKENS)
    num_blocks = -(-n // block_size) + 1
    caches = allocate_kv_caches(a.num_layers, num_blocks, block_size, a.num_kv_heads, a.head_dim,
                                next(model.parameters()).dtype, torch.device("cpu"), None)
    positions = torch.arange(n)
    slots = positions + block_size  # past the placeholder block
    meta = AttentionMetadata(slots, 0, None, None, [PrefillSpan(0, n, slots, None)])
    reset_peak_rss()
    base = peak_rss_bytes()
    hidden = model(torch.zeros(n, dtype=torch.long), positions, caches, meta)
    model.compute_logits(hidden[-1:])
    return int((peak_rss_bytes() - base) * budget / n)


def _check_fits(num_blocks: int, block_size: int, max_model_len: int) -> None:
    capacity = (num_blocks - 1) * block_size  # block 0 is a placeholder
    if capacity < max_model_len:
        raise ValueError(f"the KV cache holds {capacity} tokens, fewer than the context length "
                         f"{max_model_len}: lower --max-model-len, or give the cache more blocks "
                         "(--num-gpu-blocks-override, --gpu-memory-utilization)")


def _eos_token_id(hf_config, tokenizer) -> int | None:
    eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
    if eos is None:
        eos = getattr(hf_config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return eos
