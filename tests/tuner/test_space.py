"""The search space: derived from engine.args FLAGS; a user YAML space checked before any trial."""

from __future__ import annotations

import optuna
import pytest

from tuner.space import DEFAULT_FLAGS, Param, SpaceError, default_space, load_space, space_from_dict


def test_default_space_on_the_cpu_exact_ranges():
    space = default_space({"max_model_len": 512}, cuda=False)
    by = {p.name: p for p in space.params}
    # kv_cache_dtype has one choice on the CPU, so it is left to the engine.
    assert tuple(by) == tuple(n for n in DEFAULT_FLAGS if n != "kv_cache_dtype")
    assert by["block_size"] == Param("block_size", "categorical", (8, 16, 32))
    assert (by["max_num_batched_tokens"].low, by["max_num_batched_tokens"].high) == (512, 8192)
    assert by["max_num_batched_tokens"].log and by["max_num_seqs"].log
    assert (by["max_num_seqs"].low, by["max_num_seqs"].high) == (4, 256)
    assert (by["gpu_memory_utilization"].low, by["gpu_memory_utilization"].high, by["gpu_memory_utilization"].step) \
        == (0.05, 0.3, 0.01)
    assert (by["scheduler_delay_factor"].low, by["scheduler_delay_factor"].high, by["scheduler_delay_factor"].step) \
        == (0.0, 0.5, 0.05)
    assert space.fixed == {"max_model_len": 512}


def test_default_space_on_cuda_and_user_fixed_flags_left_out():
    space = default_space({"gpu_memory_utilization": 0.2, "block_size": 32}, cuda=True)
    names = [p.name for p in space.params]
    assert "gpu_memory_utilization" not in names and "block_size" not in names
    kv = next(p for p in space.params if p.name == "kv_cache_dtype")
    assert kv.choices == ("auto", "fp8")
    # No context length given: the budget starts at 2048.
    budget = next(p for p in space.params if p.name == "max_num_batched_tokens")
    assert (budget.low, budget.high) == (2048, 8192)


def test_baseline_holds_only_defaults_inside_the_space():
    space = default_space({"max_model_len": 512}, cuda=False)
    # max_num_batched_tokens defaults to None (engine decides), gpu_memory_utilization 0.9 is
    # outside [0.05, 0.3]: both left to the engine.
    assert space.baseline() == {"block_size": 16, "max_num_seqs": 256, "enable_chunked_prefill": False,
                                "enable_prefix_caching": False, "scheduler_delay_factor": 0.0}


def test_yaml_space_all_forms(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("max-num-seqs: {int: [8, 256], log: true}\n"
                    "--max-num-batched-tokens: {int: [512, 4096], step: 512}\n"
                    "gpu_memory_utilization: {float: [0.1, 0.3]}\n"
                    "block-size: {choices: [8, 32]}\n"
                    "enable-prefix-caching: {choices: [true, false]}\n"
                    "max-model-len: 1024\n"
                    "seed: {fixed: 3}\n")
    space = load_space(path)
    assert space.params == (
        Param("max_num_seqs", "int", (), 8, 256, log=True),
        Param("max_num_batched_tokens", "int", (), 512, 4096, step=512),
        Param("gpu_memory_utilization", "float", (), 0.1, 0.3),
        Param("block_size", "categorical", (8, 32)),
        Param("enable_prefix_caching", "categorical", (True, False)),
    )
    assert space.fixed == {"max_model_len": 1024, "seed": 3}
    assert space_from_dict(space.to_dict()) == space  # stored on the study, read back by export


def test_suggest_stays_inside_the_space():
    space = space_from_dict({"max-num-seqs": {"int": [2, 4]}, "block-size": {"choices": [8]}}, {"seed": 1})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        flags = space.suggest(study.ask())
        assert 2 <= flags["max_num_seqs"] <= 4 and flags["block_size"] == 8 and flags["seed"] == 1


@pytest.mark.parametrize("data, message", [
    ({"max-num-sequences": {"int": [1, 8]}}, "unknown flag 'max-num-sequences'"),
    ({"max-num-seqs": {"int": [64, 8]}}, "range [64, 8] has low above high"),
    ({"max-num-seqs": {"int": [0, 8]}}, "--max-num-seqs must be at least 1 (got 0)"),
    ({"gpu-memory-utilization": {"float": [0.5, 1.5]}}, "--gpu-memory-utilization must be in (0, 1] (got 1.5)"),
    ({"block-size": {"choices": [16, 64]}}, "--block-size must be one of 8, 16, 32 (got 64)"),
    ({"enable-prefix-caching": {"int": [0, 1]}}, "--enable-prefix-caching is bool"),
    ({"scheduler-delay-factor": {"float": [0, 1], "log": True}}, "log scale needs low > 0"),
    ({"max-num-seqs": {"int": [1, 8], "choices": [1]}}, "needs exactly one of"),
    ({"max-num-seqs": {"int": [1.5, 8]}}, "takes whole numbers"),
    ({"enable-chunked-prefill": "yes"}, "is on/off"),
    ({"quantization": {"choices": ["awq"]}}, "--quantization must be one of int8, int4 (got awq)"),
    ({"speculative-model": {"choices": ["m"]}}, "--speculative-model is refused"),
    ({}, "expected a mapping"),
])
def test_bad_space_is_a_clear_error(data, message):
    with pytest.raises(SpaceError) as e:
        space_from_dict(data)
    assert message in str(e.value)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(SpaceError, match="no file"):
        load_space(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("max-num-seqs: {int: [1, 8]\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        load_space(bad)
