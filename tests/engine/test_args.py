"""engine/args.py: the flag dataclass, its parser, validation and generated docs."""

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.args import (ACCEPTED, FLAGS, GROUPS, REFUSED, WORKS, ArgsError, EngineArgs,
                         flags_markdown, make_parser)

ROOT = Path(__file__).resolve().parents[2]

# The flag list of issue 3, group by group, written out here on purpose: the module must
# produce exactly this from its one dataclass.
ISSUE_FLAGS = {
    "server": "--host --port --uvicorn-log-level --allow-credentials --allowed-origins "
              "--allowed-methods --allowed-headers --api-key --ssl-keyfile --ssl-certfile "
              "--ssl-ca-certs --ssl-cert-reqs --root-path --middleware --disable-log-requests "
              "--max-log-len",
    "model": "--model --served-model-name --revision --code-revision --trust-remote-code "
             "--download-dir --load-format --model-loader-extra-config",
    "tokenizer": "--tokenizer --tokenizer-revision --tokenizer-mode --skip-tokenizer-init "
                 "--tokenizer-pool-size --tokenizer-pool-type --tokenizer-pool-extra-config",
    "lora": "--enable-lora --lora-modules --max-loras --max-lora-rank --lora-extra-vocab-size "
            "--lora-dtype --max-cpu-loras",
    "parallel": "--pipeline-parallel-size --tensor-parallel-size "
                "--distributed-executor-backend --worker-use-ray --ray-workers-use-nsight",
    "memory": "--gpu-memory-utilization --cpu-offload-gb --swap-space --num-gpu-blocks-override",
    "model settings": "--dtype --kv-cache-dtype --quantization --quantization-param-path "
                      "--max-model-len --block-size",
    "processing": "--max-num-batched-tokens --max-num-seqs --max-logprobs "
                  "--max-context-len-to-capture --enable-prefix-caching "
                  "--num-lookahead-slots --enforce-eager",
    "chat": "--chat-template --response-role --enable-chunked-prefill",
    "images": "--image-input-type --image-token-id --image-input-shape --image-feature-size",
    "logging": "--disable-log-stats --log-format --trace-log-directory",
    "speculative": "--speculative-model --num-speculative-tokens --speculative-max-model-len",
    "misc": "--seed --scheduler-delay-factor --use-v2-block-manager "
            "--disable-custom-all-reduce --device",
}

# vLLM's documented defaults (0.5/0.6 engine and server args); model is None in dyno
# (the default model) where vLLM has facebook/opt-125m.
VLLM_DEFAULTS = {
    "host": None, "port": 8000, "uvicorn_log_level": "info", "allow_credentials": False,
    "allowed_origins": ["*"], "allowed_methods": ["*"], "allowed_headers": ["*"],
    "api_key": None, "ssl_keyfile": None, "ssl_certfile": None, "ssl_ca_certs": None,
    "ssl_cert_reqs": 0, "root_path": None, "middleware": [], "disable_log_requests": False,
    "max_log_len": None,
    "model": None, "served_model_name": None, "revision": None, "code_revision": None,
    "trust_remote_code": False, "download_dir": None, "load_format": "auto",
    "model_loader_extra_config": None,
    "tokenizer": None, "tokenizer_revision": None, "tokenizer_mode": "auto",
    "skip_tokenizer_init": False, "tokenizer_pool_size": 0, "tokenizer_pool_type": "ray",
    "tokenizer_pool_extra_config": None,
    "enable_lora": False, "lora_modules": None, "max_loras": 1, "max_lora_rank": 16,
    "lora_extra_vocab_size": 256, "lora_dtype": "auto", "max_cpu_loras": None,
    "pipeline_parallel_size": 1, "tensor_parallel_size": 1,
    "distributed_executor_backend": None, "worker_use_ray": False,
    "ray_workers_use_nsight": False,
    "gpu_memory_utilization": 0.9, "cpu_offload_gb": 0, "swap_space": 4,
    "num_gpu_blocks_override": None,
    "dtype": "auto", "kv_cache_dtype": "auto", "quantization": None,
    "quantization_param_path": None, "max_model_len": None, "block_size": 16,
    "max_num_batched_tokens": None, "max_num_seqs": 256, "max_logprobs": 20,
    "max_context_len_to_capture": None, "enable_prefix_caching": False,
    "num_lookahead_slots": 0, "enforce_eager": False,
    "chat_template": None, "response_role": "assistant", "enable_chunked_prefill": False,
    "image_input_type": None, "image_token_id": None, "image_input_shape": None,
    "image_feature_size": None,
    "disable_log_stats": False, "log_format": "text", "trace_log_directory": None,
    "speculative_model": None, "num_speculative_tokens": None,
    "speculative_max_model_len": None,
    "seed": 0, "scheduler_delay_factor": 0.0, "use_v2_block_manager": False,
    "disable_custom_all_reduce": False, "device": "auto",
}

MUST_WORK = (
    "model revision code_revision trust_remote_code download_dir "
    "load_format model_loader_extra_config tokenizer tokenizer_revision tokenizer_mode "
    "skip_tokenizer_init gpu_memory_utilization num_gpu_blocks_override dtype kv_cache_dtype "
    "quantization_param_path max_model_len block_size max_num_batched_tokens max_num_seqs "
    "max_logprobs enable_prefix_caching enable_chunked_prefill chat_template "
    "seed scheduler_delay_factor device log_format disable_log_stats").split()
MUST_BE_ACCEPTED = (
    "swap_space use_v2_block_manager worker_use_ray distributed_executor_backend "
    "disable_custom_all_reduce enforce_eager max_context_len_to_capture tokenizer_pool_type "
    "tokenizer_pool_extra_config").split()


def help_text() -> str:
    return make_parser().format_help()


def error_of(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        EngineArgs.from_argv(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# -- the flag list ---------------------------------------------------------------------------


def test_fields_are_exactly_the_issue_flags():
    expected = [opt for group in ISSUE_FLAGS.values() for opt in group.split()]
    assert sorted(f.option for f in FLAGS) == sorted(expected)
    assert [f.name for f in FLAGS] == [f.name for f in dataclasses.fields(EngineArgs)]


def test_each_flag_in_its_group():
    for flag in FLAGS:
        assert flag.option in ISSUE_FLAGS[flag.group].split(), flag.option
    assert [name for name, _ in GROUPS] == list(ISSUE_FLAGS)


def test_help_lists_every_flag_under_its_group():
    text = help_text()
    titles = [name for name, _ in GROUPS]
    starts = [text.index(f"\n{title}:\n") for title in titles]
    assert starts == sorted(starts)  # groups in the issue's order
    for i, title in enumerate(titles):
        section = text[starts[i]: starts[i + 1] if i + 1 < len(starts) else len(text)]
        listed = re.findall(r"^  (--[a-z0-9-]+)", section, flags=re.M)
        assert listed == ISSUE_FLAGS[title].split(), title


def test_help_shows_positional_model_defaults_and_status():
    text = " ".join(help_text().split())  # the wrapping depends on the terminal width
    assert text.startswith("usage: dyno serve [-h]") and "[MODEL]" in text
    assert "--block-size {8,16,32} Tokens per KV cache block. Default: 16." in text
    assert "--enable-lora Serve LoRA adapters. Default: off. [refused]" in text
    assert "--use-v2-block-manager No effect: dyno has one block manager" in text
    assert "share of available system memory" in text  # --gpu-memory-utilization on the CPU


def test_defaults_equal_vllm():
    args = EngineArgs()
    assert {name: getattr(args, name) for name in VLLM_DEFAULTS} == VLLM_DEFAULTS
    assert dataclasses.asdict(args).keys() == VLLM_DEFAULTS.keys()


def test_empty_argv_gives_defaults():
    assert EngineArgs.from_argv([]) == EngineArgs()


def test_statuses():
    status = {f.name: f.status for f in FLAGS}
    assert all(status[n] == WORKS for n in MUST_WORK)
    assert all(status[n] == ACCEPTED for n in MUST_BE_ACCEPTED)
    assert all(status[f.name] == REFUSED for f in FLAGS if f.group in
               ("lora", "images", "speculative"))
    # The HTTP server exists: its flags, and those only it uses, work.
    assert all(status[f.name] == WORKS for f in FLAGS if f.group == "server")
    assert status["served_model_name"] == status["response_role"] == WORKS
    assert status["trace_log_directory"] == WORKS
    assert {n for n, s in status.items() if s == REFUSED} & {
        "tensor_parallel_size", "pipeline_parallel_size", "ray_workers_use_nsight",
        "cpu_offload_gb", "num_lookahead_slots",
        "tokenizer_pool_size"} == {"tensor_parallel_size", "pipeline_parallel_size",
                                   "ray_workers_use_nsight", "cpu_offload_gb",
                                   "num_lookahead_slots", "tokenizer_pool_size"}
    assert status["quantization"] == WORKS


# -- parsing ---------------------------------------------------------------------------------


def test_block_size():
    assert EngineArgs.from_argv(["--block-size", "32"]).block_size == 32


def test_typed_values():
    args = EngineArgs.from_argv(
        ["--gpu-memory-utilization", "0.5", "--max-num-seqs", "8", "--dtype", "bfloat16",
         "--enable-prefix-caching", "--kv-cache-dtype", "fp8_e5m2", "--seed", "7",
         "--swap-space", "0.5", "--device", "cpu", "--log-format", "json"])
    assert (args.gpu_memory_utilization, args.max_num_seqs, args.dtype) == (0.5, 8, "bfloat16")
    assert (args.enable_prefix_caching, args.kv_cache_dtype, args.seed) == (True, "fp8_e5m2", 7)
    assert (args.swap_space, args.device, args.log_format) == (0.5, "cpu", "json")


def test_positional_model_and_flag():
    assert EngineArgs.from_argv(["some/model"]).model == "some/model"
    assert EngineArgs.from_argv(["--model", "m"]).model == "m"
    assert EngineArgs.from_argv(["m", "--model", "m"]).model == "m"


def test_model_given_twice_differently(capsys):
    err = error_of(capsys, ["a", "--model", "b"])
    assert err == "dyno serve: error: the model is given twice (a and --model b); give it once\n"


def test_without_positional_model():
    parser = make_parser("dyno generate", positional_model=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["stray"])


def test_list_flags():
    ns = make_parser().parse_args(["--served-model-name", "a", "b", "--allowed-origins", '["http://x", "http://y"]',
                                   "--middleware", "m.a", "--middleware", "m.b"])
    assert ns.served_model_name == ["a", "b"]
    assert ns.allowed_origins == ["http://x", "http://y"]
    assert ns.middleware == ["m.a", "m.b"]
    assert EngineArgs().middleware is not EngineArgs().middleware  # no shared default


def test_json_flags_become_dicts():
    args = EngineArgs.from_argv(["--model-loader-extra-config", '{"a": 1}',
                                 "--tokenizer-pool-extra-config", "{}"])
    assert args.model_loader_extra_config == {"a": 1}
    assert args.tokenizer_pool_extra_config == {}
    assert EngineArgs(model_loader_extra_config={"b": 2}).validate().model_loader_extra_config \
        == {"b": 2}


def test_bad_json(capsys):
    err = error_of(capsys, ["--model-loader-extra-config", "{bad"])
    assert err.startswith("dyno serve: error: --model-loader-extra-config is not valid JSON")
    assert err.count("\n") == 1
    with pytest.raises(ArgsError, match="--tokenizer-pool-extra-config must be a JSON object"):
        EngineArgs(tokenizer_pool_extra_config="[1]").validate()


def test_accepted_flags_are_accepted():
    args = EngineArgs.from_argv(["--use-v2-block-manager", "--worker-use-ray", "--enforce-eager",
                                 "--swap-space", "8", "--distributed-executor-backend", "mp",
                                 "--disable-custom-all-reduce",
                                 "--max-context-len-to-capture", "1024",
                                 "--tokenizer-pool-type", "ray", "--tokenizer-pool-size", "0",
                                 "--num-lookahead-slots", "0"])
    assert args.use_v2_block_manager and args.worker_use_ray and args.swap_space == 8


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"block_size": 12}, "--block-size must be one of 8, 16, 32 (got 12)"),
    ({"gpu_memory_utilization": 0.0}, "--gpu-memory-utilization must be in (0, 1] (got 0.0)"),
    ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization must be in (0, 1] (got 1.5)"),
    ({"max_num_seqs": 0}, "--max-num-seqs must be at least 1 (got 0)"),
    ({"swap_space": -1}, "--swap-space must be at least 0 (got -1)"),
    ({"kv_cache_dtype": "int8"},
     "--kv-cache-dtype must be one of auto, fp8, fp8_e4m3, fp8_e5m2 (got int8)"),
    ({"tensor_parallel_size": 0}, "--tensor-parallel-size must be at least 1 (got 0)"),
    ({"max_num_batched_tokens": 64, "max_num_seqs": 128},
     "--max-num-batched-tokens (64) must be at least --max-num-seqs (128); raise it or lower "
     "--max-num-seqs"),
    ({"max_num_batched_tokens": 512, "max_model_len": 1024},
     "--max-num-batched-tokens (512) is smaller than --max-model-len (1024); raise it, lower "
     "--max-model-len or pass --enable-chunked-prefill"),
])
def test_validate_rejects(kwargs, message):
    with pytest.raises(ArgsError) as error_info:
        EngineArgs(**kwargs).validate()
    assert str(error_info.value) == message


def test_small_budget_is_fine_with_chunked_prefill():
    args = EngineArgs(max_num_batched_tokens=512, max_model_len=1024, enable_chunked_prefill=True)
    assert args.validate() is args


@pytest.mark.parametrize("argv, message", [
    (["--block-size", "12"], "argument --block-size: invalid choice: 12"),
    (["--kv-cache-dtype", "int8"], "argument --kv-cache-dtype: invalid choice: 'int8'"),
    (["--max-num-seqs", "0"], "--max-num-seqs must be at least 1 (got 0)"),
    (["--gpu-memory-utilization", "2"], "--gpu-memory-utilization must be in (0, 1] (got 2.0)"),
    (["--swap-space", "-1"], "--swap-space must be at least 0 (got -1.0)"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_cli_errors_exit_2(capsys, argv, message):
    assert message in error_of(capsys, argv)


@pytest.mark.parametrize("argv, line", [
    (["--tensor-parallel-size", "2"],
     "--tensor-parallel-size 2 is not supported by dyno yet (refused); remove it"),
    (["--enable-lora"], "--enable-lora is not supported by dyno yet (refused); remove it"),
    (["--num-lookahead-slots", "1"],
     "--num-lookahead-slots 1 is not supported by dyno yet (refused); remove it"),
    (["--speculative-model", "m"],
     "--speculative-model m is not supported by dyno yet (refused); remove it"),
])
def test_refused_flags_exit_2_with_one_line(capsys, argv, line):
    assert error_of(capsys, argv) == f"dyno serve: error: {line}\n"


def test_every_refused_flag_is_refused_off_default():
    for flag in (f for f in FLAGS if f.status == REFUSED):
        value = {bool: True, int: 2, float: 1.0, str: "x", list: ["x"], dict: {}}[flag.kind]
        if flag.choices:
            value = next(c for c in flag.choices if c != flag.default)
        with pytest.raises(ArgsError, match=re.escape(flag.option) + ".*refused"):
            EngineArgs(**{flag.name: value}).validate()
        assert EngineArgs(**{flag.name: flag.default}).validate()  # default is fine


def test_refused_at_default_is_fine():
    args = EngineArgs.from_argv(["--port", "9000", "--tensor-parallel-size", "1"])
    assert (args.port, args.tensor_parallel_size) == (9000, 1)


# -- docs ------------------------------------------------------------------------------------


def test_docs_match_the_dataclass():
    assert (ROOT / "docs" / "flags.md").read_text() == flags_markdown()


def test_markdown_has_a_row_per_flag():
    text = flags_markdown()
    for flag in FLAGS:
        assert re.search(rf"^\| `{flag.option}` \| .* \| {flag.status} \|$", text, flags=re.M)
    assert "| `--block-size` | `16` | 8, 16, 32 | Tokens per KV cache block. | works |" in text


def test_module_prints_markdown():
    out = subprocess.run([sys.executable, "-m", "engine.args", "--markdown"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out == flags_markdown()
