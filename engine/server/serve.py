"""`dyno serve`: the async engine, the app, and uvicorn with the server flags."""

from __future__ import annotations

import logging

import uvicorn

from engine.args import EngineArgs
from engine.async_llm import AsyncLLM
from engine.server.app import build_app
from engine.server.tls import uvicorn_ssl_kwargs

logger = logging.getLogger(__name__)

# In-flight requests get this long to finish after SIGTERM; then they are cut.
GRACEFUL_SHUTDOWN_S = 10


def serve(args: EngineArgs) -> None:
    engine = AsyncLLM(args)
    try:
        app = build_app(args, engine)
        config = uvicorn.Config(app, host=args.host or "0.0.0.0", port=args.port,
                                log_level=args.uvicorn_log_level, log_config=None,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
                                **uvicorn_ssl_kwargs(args))
        server = uvicorn.Server(config)
        logger.info("serving %s on %s:%d", engine.engine.info.model_name, args.host or "0.0.0.0", args.port)
        server.run()
    finally:
        engine.shutdown()
