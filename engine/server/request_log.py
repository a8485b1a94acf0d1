"""Per-request log lines (--disable-log-requests turns them off, --max-log-len shortens them).

Logger "engine.server.requests", level INFO; the lines go wherever the process's logging goes,
so --log-format json makes them JSON objects too. The request id is the one clients send in
X-Request-Id (or the server's own), so a client's records join these lines.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.args import EngineArgs

if TYPE_CHECKING:
    from engine.sampling_params import SamplingParams

logger = logging.getLogger("engine.server.requests")


def clip(value, max_len: int | None):
    """A prompt string cut to max_len characters, or a token-id list to max_len ids."""
    if value is None or max_len is None:
        return value
    return value[:max_len]


class RequestLogger:
    def __init__(self, args: EngineArgs) -> None:
        self.enabled = not args.disable_log_requests
        self.max_log_len = args.max_log_len

    def received(self, request_id: str, prompt: str | list[int] | None,
                 params: SamplingParams) -> None:
        if not self.enabled:
            return
        shown = clip(prompt, self.max_log_len)
        kind = "prompt_token_ids" if isinstance(prompt, list) else "prompt"
        logger.info("Received request %s: %s: %r, params: %s", request_id, kind, shown, params)

    def finished(self, request_id: str, *, num_prompt_tokens: int, num_output_tokens: int,
                 finish_reason: str | None, e2e_s: float) -> None:
        if not self.enabled:
            return
        logger.info("Finished request %s: prompt_tokens=%d, output_tokens=%d, finish_reason=%s, "
                    "e2e=%.3fs", request_id, num_prompt_tokens, num_output_tokens, finish_reason,
                    e2e_s)
