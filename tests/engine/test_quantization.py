"""--quantization int8 | int4: the kernels compute with exactly the weights the quantizer
describes, and the flag's bad combinations fail with one line. (Agreement with fp32 on the
default model is measured in test_kv_cache_dtype.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine import LLM, SamplingParams, cpu_kernels
from engine.models.prompt_linear import PROMPT_FROM_ROWS
from engine.models.packed_linear import pack_linears
from engine.models.quant_linear import (DENSE_FROM_ROWS, INT4_GEMV_UP_TO_ROWS, Int4Linear, Int8Linear,
                                        dequantize_int4, quantize_int4, quantize_int8, quantize_linears)


@pytest.fixture
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(128, 96, bias=True).to(torch.bfloat16)


def _reference(x, weight, bias):
    return x.float() @ weight.T + bias.float()


def test_int8_layer_computes_with_its_quantized_weight(linear):
    x = torch.randn(3, 128, dtype=torch.bfloat16)
    q, scale = quantize_int8(linear.weight)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    want = _reference(x, q.float() * scale.to(torch.bfloat16).float()[:, None], linear.bias)
    torch.testing.assert_close(Int8Linear(linear)(x).float(), want, rtol=2e-2, atol=2e-2)


def test_int4_layer_computes_with_its_quantized_weight(linear):
    x = torch.randn(5, 128, dtype=torch.bfloat16)
    codes, scales_and_zeros = quantize_int4(linear.weight)
    assert scales_and_zeros.shape == (128 // 32, 96, 2)
    assert int(codes.min()) == 0 and int(codes.max()) == 15
    want = _reference(x, dequantize_int4(codes, scales_and_zeros.to(torch.bfloat16).float()), linear.bias)
    torch.testing.assert_close(Int4Linear(linear)(x).float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("rows", [2, INT4_GEMV_UP_TO_ROWS, INT4_GEMV_UP_TO_ROWS + 1, DENSE_FROM_ROWS + 3,
                                  PROMPT_FROM_ROWS + 3])
@pytest.mark.parametrize("kind", [Int8Linear, Int4Linear])
def test_batches_take_the_same_weights_as_single_rows(linear, kind, rows):
    """Batches go to other kernels than single rows (AMX, or the dequantized bf16 weight): each
    row gets what it gets alone, up to bf16 rounding of the weight and the sum."""
    layer = kind(linear)
    x = torch.randn(rows, 128, dtype=torch.bfloat16)
    # the bf16 copy is held once: in tile order beside AMX (prompts only), else packed for oneDNN;
    # on VNNI without AMX none (its kernels take every batch)
    copies = [getattr(layer.dense, name, None) for name in ("weight", "packed", "tiles")]
    assert sum(c is not None for c in copies) == _bf16_copies(kind.__name__[:4].lower())
    one_at_a_time = torch.cat([layer(row[None]) for row in x])
    torch.testing.assert_close(layer(x).float(), one_at_a_time.float(), rtol=2e-2, atol=2e-2)


def test_int4_round_trip_error_is_at_most_half_a_step(linear):
    codes, scales_and_zeros = quantize_int4(linear.weight)
    step = scales_and_zeros[..., 0].T.repeat_interleave(32, dim=1)  # [N, K]
    error = (dequantize_int4(codes, scales_and_zeros) - linear.weight.float()).abs()
    assert bool((error <= step / 2 + 1e-6).all())


def test_int4_keeps_lm_head_in_int8_and_skips_partial_groups():
    model = nn.Module()
    model.proj = nn.Linear(64, 32, bias=False).bfloat16()
    model.odd = nn.Linear(40, 32, bias=False).bfloat16()  # 40 input channels: no whole groups
    model.lm_head = nn.Linear(64, 100, bias=False).bfloat16()
    assert quantize_linears(model, "int4") == 2
    assert (type(model.proj), type(model.odd), type(model.lm_head)) == (Int4Linear, nn.Linear, Int8Linear)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_packing_the_model_leaves_the_quantized_layers_one_bf16_copy(method):
    """load_model packs every nn.Linear after quantizing: not the quantized layers' bf16 copy
    (one at most)."""
    model = nn.Module()
    model.proj = nn.Linear(64, 32, bias=False).bfloat16()
    quantize_linears(model, method)
    pack_linears(model)
    tensors = [*model.named_parameters(), *model.named_buffers(),  # oneDNN's packed weights are attributes
               *((f"{name}.packed", m.packed) for name, m in model.named_modules() if getattr(m, "packed", None) is not None)]
    copies = [name for name, t in tensors if t.dtype == torch.bfloat16 and t.numel() == 64 * 32]
    assert len(copies) == _bf16_copies(method), copies


def _bf16_copies(method: str) -> int:
    kernels = cpu_kernels.load()
    vnni_only = kernels is not None and not kernels.amx_available() and kernels.vnni_available()
    return 0 if vnni_only else 1


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_tiny_llama_generates(tiny_models, method):
    path, _ = tiny_models["llama"]
    llm = LLM(str(path), skip_tokenizer_init=True, quantization=method, max_model_len=128)
    assert llm.engine.info.dtype == torch.bfloat16
    out = llm.generate([{"prompt_token_ids": [1, 2, 3, 4]}], SamplingParams(max_tokens=5, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 5


def test_quantization_with_float32_is_one_line(tiny_models):
    path, _ = tiny_models["llama"]
    with pytest.raises(ValueError, match=r"^--quantization int4 computes in bfloat16; drop --dtype "
                                         r"float32 or use --dtype bfloat16$"):
        LLM(str(path), skip_tokenizer_init=True, quantization="int4", dtype="float32", max_model_len=128)
