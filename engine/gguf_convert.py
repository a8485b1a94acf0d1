"""Turn a GGUF file of the Llama family into a Hugging Face directory, dequantized to fp32.

The weights are dequantized with the `gguf` package and renamed to Hugging Face's names;
llama.cpp's converter permutes the rows of q/k projections for its rotary layout, and
this undoes it (as transformers' own GGUF loader does). Config and tokenizer come from
transformers' GGUF support, which maps the metadata and builds a fast tokenizer with the chat
template.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# GGUF architecture -> (HF class, whether llama.cpp permuted q/k for its rope layout)
ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", True),
    "mistral": ("MistralForCausalLM", True),
    "qwen2": ("Qwen2ForCausalLM", False),
}
_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_PER_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_SKIPPED = {"rope_freqs"}  # recomputed from the config's rope parameters
# general.file_type -> the dtype a user of the original checkpoint would pick
_FILE_TYPE_DTYPE = {0: "float32", 1: "float16", 32: "bfloat16"}


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write config.json, generation_config.json, model.safetensors and tokenizer files."""
    from gguf import GGUFReader

    from engine.model_source import ModelSourceError

    reader = GGUFReader(gguf_path)
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelSourceError(
            f"GGUF architecture {arch!r} of '{gguf_path}' is not supported: dyno converts "
            f"{', '.join(ARCHITECTURES)}"
        )
    out_dir.mkdir(parents=True)
    config = _write_config(reader, gguf_path, out_dir, arch)
    _write_weights(reader, out_dir, config, permute_qk=ARCHITECTURES[arch][1])
    _write_tokenizer(gguf_path, out_dir)


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _write_config(reader, gguf_path: Path, out_dir: Path, arch: str):
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if arch == "llama" and config.model_type == "mistral":
        arch = "mistral"
    config.architectures = [ARCHITECTURES[arch][0]]
    dtype = _FILE_TYPE_DTYPE.get(_field(reader, "general.file_type"), "bfloat16")
    config.dtype = dtype
    config.save_pretrained(out_dir)
    # transformers 5 writes "dtype"; older readers (and other engines) look for "torch_dtype".
    path = out_dir / "config.json"
    data = json.loads(path.read_text())
    data["torch_dtype"] = dtype
    data.pop("_model_name_or_path", None)  # the GGUF's general.name, not a path
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=getattr(config, "pad_token_id", None),
    ).save_pretrained(out_dir)
    return config


def _write_weights(reader, out_dir: Path, config, *, permute_qk: bool) -> None:
    import torch
    from gguf import GGMLQuantizationType, dequantize
    from safetensors.torch import save_file

    from engine.model_source import ModelSourceError

    tensors = {}
    for t in reader.tensors:
        name = _hf_name(t.name)
        if name is None:
            continue
        if name == "":
            raise ModelSourceError(f"unexpected tensor {t.name!r} in GGUF file: only the Llama family is supported")
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            w = np.asarray(t.data, dtype=np.float32)
        else:
            w = dequantize(t.data, t.tensor_type)
        w = w.reshape([int(d) for d in reversed(t.shape)])  # GGUF lists dims innermost first
        if permute_qk and name.rsplit(".", 2)[1] in ("q_proj", "k_proj"):
            heads = config.num_attention_heads if "q_proj" in name else config.num_key_value_heads
            w = _unpermute(w, heads)
        tensors[name] = torch.from_numpy(np.require(w, np.float32, ["C", "W"]))
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})


def _hf_name(gguf_name: str) -> str | None:
    """HF parameter name; None for tensors to skip, "" for ones this converter does not know."""
    base, _, suffix = gguf_name.rpartition(".")
    parts = base.split(".")
    if parts[0] in _SKIPPED:
        return None
    if len(parts) == 1 and parts[0] in _TOP_LEVEL:
        return f"{_TOP_LEVEL[parts[0]]}.{suffix}"
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _PER_LAYER:
        return f"model.layers.{parts[1]}.{_PER_LAYER[parts[2]]}.{suffix}"
    return ""


def _unpermute(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: per head, interleaved halves back to rotate-half order."""
    rows = w.shape[0]
    # llama.cpp: w.reshape(heads, 2, half, ...).swapaxes(1, 2); this is its inverse.
    return w.reshape(num_heads, rows // num_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tokenizer(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer.save_pretrained(out_dir)
