"""The offline API: `LLM(model=None, **engine_args).generate(prompts, params)`."""

from __future__ import annotations

import itertools

from engine.args import EngineArgs
from engine.chat import load_chat_template, render_chat
from engine.llm_engine import LLMEngine, Prompt
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams


class LLM:
    def __init__(self, model: str | None = None, **engine_args) -> None:
        self.engine = LLMEngine(EngineArgs(model=model, **engine_args))
        self._ids = itertools.count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(self, prompts: Prompt | list[Prompt],
                 sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """Run every prompt to completion; outputs come back in prompt order."""
        prompts = _as_prompt_list(prompts)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
        # Validate all first, so a bad prompt leaves nothing half-submitted.
        processed = [self.engine.process_request(str(next(self._ids)), p, sp or SamplingParams())
                     for p, sp in zip(prompts, params)]
        for req in processed:
            self.engine.add_processed(req)
        return self._run([req.request_id for req in processed], use_tqdm)

    def chat(self, messages: list[dict] | list[list[dict]],
             sampling_params: SamplingParams | list[SamplingParams] | None = None,
             chat_template: str | None = None, add_generation_prompt: bool = True,
             use_tqdm: bool = False) -> list[RequestOutput]:
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        template = load_chat_template(chat_template or self.engine.args.chat_template)
        prompts = [render_chat(self.engine.tokenizer, conv, template, add_generation_prompt)
                   for conv in conversations]
        # The template already holds any special tokens; encoding must not add a second BOS.
        token_prompts = [{"prompt": p, "prompt_token_ids": self.engine.tokenizer.encode(p, add_special_tokens=False)}
                         for p in prompts]
        return self.generate(token_prompts, sampling_params, use_tqdm)

    def _run(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        finished: dict[str, RequestOutput] = {}
        progress = _progress(len(request_ids)) if use_tqdm else None
        while self.engine.has_unfinished_requests():
            for out in self.engine.step():
                if out.finished:
                    finished[out.request_id] = out
                    if progress:
                        progress.advance(progress.task_ids[0])
        if progress:
            progress.stop()
        return [finished[r] for r in request_ids]


def _as_prompt_list(prompts) -> list[Prompt]:
    if isinstance(prompts, (str, dict)):
        return [prompts]
    if isinstance(prompts, list) and prompts and all(isinstance(t, int) for t in prompts):
        return [prompts]
    return list(prompts)


def _progress(total: int):
    from rich.progress import Progress

    progress = Progress()
    progress.add_task("generating", total=total)
    progress.start()
    return progress
