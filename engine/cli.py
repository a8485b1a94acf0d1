"""`dyno generate` (offline generation from the shell) and `dyno serve`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from engine.args import ArgsError, EngineArgs, make_parser
from engine.log import configure_logging
from engine.model_source import ModelSourceError

DEFAULT_CHATS = [
    "What is the capital of France?",
    "Write a haiku about a server that never sleeps.",
    "Explain in two sentences why batching requests makes an LLM server faster.",
    "Give three tips for writing readable Python.",
]


def _generate_parser() -> argparse.ArgumentParser:
    parser = make_parser("dyno generate", positional_model=True)
    parser.description = ("Generate completions offline with dyno's engine (default: a few chat "
                          "prompts on the default model). Engine flags are those of `dyno serve`.")
    g = parser.add_argument_group("generation")
    g.add_argument("--prompt", action="append", dest="prompts", metavar="TEXT",
                   help="A prompt (repeat for several). Default: a few built-in chat prompts.")
    g.add_argument("--prompts-file", help="A text file with one prompt per line.")
    g.add_argument("--raw", action="store_true",
                   help="Send prompts as plain text instead of through the chat template.")
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=-1)
    g.add_argument("-n", type=int, default=1, help="Completions per prompt.")
    g.add_argument("--sample-seed", type=int, default=None, help="Per-request sampling seed.")
    g.add_argument("--ignore-eos", action="store_true")
    g.add_argument("--json", action="store_true", help="Print one JSON object per prompt.")
    g.add_argument("-v", "--verbose", action="store_true", help="Log the engine's start-up and statistics.")
    return parser


def _read_prompts(ns: argparse.Namespace) -> list[str]:
    prompts = list(ns.prompts or [])
    if ns.prompts_file:
        try:
            with open(ns.prompts_file, encoding="utf-8") as f:
                prompts += [line.rstrip("\n") for line in f if line.strip()]
        except OSError as e:
            raise ValueError(f"cannot read --prompts-file {ns.prompts_file}: {e.strerror}") from None
    return prompts or list(DEFAULT_CHATS)


def generate_main(argv: list[str]) -> int:
    parser = _generate_parser()
    ns = parser.parse_args(argv)
    try:
        from engine.llm import LLM
        from engine.sampling_params import SamplingParams

        args = EngineArgs.from_namespace(ns).validate()
        configure_logging(args.log_format, logging.INFO if ns.verbose else logging.WARNING)
        params = SamplingParams(n=ns.n, temperature=ns.temperature, top_p=ns.top_p, top_k=ns.top_k,
                                max_tokens=ns.max_tokens, seed=ns.sample_seed, ignore_eos=ns.ignore_eos)
        prompts = _read_prompts(ns)
        llm = LLM(**{k: v for k, v in vars(args).items()})
        start = time.monotonic()
        if ns.raw:
            outputs = llm.generate(prompts, params)
        else:
            outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params)
        elapsed = time.monotonic() - start
    except (ArgsError, ModelSourceError, ValueError, OSError) as e:
        print(f"dyno generate: error: {e}", file=sys.stderr)
        return 2
    _print_outputs(prompts, outputs, ns.json)
    num_tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    print(f"# {len(outputs)} prompts, {num_tokens} tokens in {elapsed:.2f}s "
          f"({num_tokens / elapsed:.1f} tokens/s)", file=sys.stderr)
    return 0


def _print_outputs(prompts: list[str], outputs, as_json: bool) -> None:
    for prompt, out in zip(prompts, outputs):
        if as_json:
            print(json.dumps({"prompt": prompt, "outputs": [
                {"text": c.text, "token_ids": c.token_ids, "finish_reason": c.finish_reason}
                for c in out.outputs]}))
            continue
        print(f"### {prompt}")
        for c in out.outputs:
            print(c.text.strip())
            print(f"[{len(c.token_ids)} tokens, finish: {c.finish_reason}]\n")


def serve_main(argv: list[str]) -> int:
    args = EngineArgs.from_argv(argv, prog="dyno serve")
    configure_logging(args.log_format)
    try:
        from engine.server.serve import serve

        serve(args)
    except (ModelSourceError, ValueError, OSError) as e:
        print(f"dyno serve: error: {e}", file=sys.stderr)
        return 2
    return 0
