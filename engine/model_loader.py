"""Builds the model of a resolved checkpoint: class by architecture, dtype, weights."""

from __future__ import annotations

import contextlib
import logging

import torch

from engine.model_source import ModelFiles, iter_weights
from engine.models import get_model_class
from engine.models.packed_linear import can_pack, pack_linears
from engine.models.quant_linear import quantize_linears

logger = logging.getLogger(__name__)

_DTYPES = {"half": torch.float16, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float": torch.float32, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """'auto' stays on the CPU; 'cuda' needs a CUDA device and Triton (its attention backend)."""
    if name != "cuda":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device (a CPU-only torch build, or no "
                         "GPU): install a CUDA torch or use --device cpu")
    try:
        import triton  # noqa: F401  the GPU path's attention kernels
    except Exception as e:  # ImportError, or a broken install
        raise ValueError(f"--device cuda needs Triton, which failed to import ({e}): "
                         "pip install 'llm-dyno[gpu]' or use --device cpu") from None
    return torch.device("cuda")


def resolve_dtype(name: str, hf_config, device: torch.device) -> torch.dtype:
    """'auto' takes the checkpoint's dtype; on the CPU fp16 becomes bf16, which these cores compute fast."""
    if name != "auto":
        return _DTYPES[name]
    declared = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    if declared not in (torch.float16, torch.bfloat16, torch.float32):
        return torch.float32
    if declared == torch.float16 and device.type == "cpu":
        return torch.bfloat16
    return declared


def resolve_quantization(method: str | None, dtype_flag: str, dtype: torch.dtype,
                         device: torch.device) -> torch.dtype:
    """The compute dtype under --quantization: its kernels are CPU-only and compute in bf16."""
    if method is None:
        return dtype
    if device.type != "cpu":
        raise ValueError(f"--quantization {method} runs on the CPU only; drop it or use --device cpu")
    if dtype_flag != "auto" and dtype != torch.bfloat16:
        raise ValueError(f"--quantization {method} computes in bfloat16; drop --dtype {dtype_flag} "
                         f"or use --dtype bfloat16")
    return torch.bfloat16


def load_model(files: ModelFiles, hf_config, dtype: torch.dtype, device: torch.device,
               seed: int, quantization: str | None = None) -> torch.nn.Module:
    model_class = get_model_class(hf_config)
    torch.manual_seed(seed)  # dummy weights repeat for a given --seed
    with torch.device(device), _no_random_init():
        model = model_class(hf_config)
    if files.weight_format == "dummy":
        _init_dummy(model)
    else:
        model.load_weights(iter_weights(files))
    model = model.to(dtype).eval()
    model.requires_grad_(False)
    if quantization is not None:
        swapped = quantize_linears(model, quantization)
        logger.info("quantized %d linear layers to %s (weight-only)", swapped, quantization)
    if can_pack(dtype, device):
        pack_linears(model)
    if hasattr(model, "build_decode_stack"):
        model.build_decode_stack()
    return model


@contextlib.contextmanager
def _no_random_init():
    """Layers built without their random init (kaiming, normal), which took ~0.9 s of a load of
    the default model: every parameter is then loaded (load_weights checks) or set by
    _init_dummy. Torch's own init functions are swapped out only while the model is built."""
    names = ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_",
             "xavier_uniform_", "xavier_normal_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    try:
        for name in names:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def _init_dummy(model: torch.nn.Module) -> None:
    """Random weights of the right shapes; small so activations stay finite through all layers."""
    for name, param in model.named_parameters():
        if name.endswith("layernorm.weight") or name == "norm.weight":
            param.data.fill_(1.0)
        else:
            param.data.uniform_(-1e-3, 1e-3)


def model_num_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total
