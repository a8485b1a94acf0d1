"""`dyno serve`: the async engine, the app, and uvicorn with the server flags."""

from __future__ import annotations

import gc
import logging
import signal
import threading

import uvicorn

from engine.args import EngineArgs
from engine.async_llm import AsyncLLM
from engine.server.app import build_app
from engine.server.middleware import check_middleware
from engine.server.tls import uvicorn_ssl_kwargs

logger = logging.getLogger(__name__)

# In-flight requests get this long to finish after SIGTERM; then they are cut.
GRACEFUL_SHUTDOWN_S = 10


class _Server(uvicorn.Server):
    """uvicorn re-raises a SIGTERM it caught once its graceful shutdown is done, so the process
    would die by the signal (exit -15); for dyno SIGTERM is the normal way to stop: exit 0."""

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and captured and captured[-1] == sig:
            captured.pop()


def serve(args: EngineArgs) -> None:
    """The engine steps on the main thread; uvicorn runs its event loop on a second one."""
    # Flag mistakes that need no model are reported before the model loads.
    check_middleware(args)
    ssl_kwargs = uvicorn_ssl_kwargs(args)
    engine = AsyncLLM(args, own_thread=False)
    try:
        app = build_app(args, engine)
        config = uvicorn.Config(app, host=args.host or "0.0.0.0", port=args.port,
                                log_level=args.uvicorn_log_level, log_config=None,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **ssl_kwargs)
        server = _Server(config)
        # uvicorn only catches signals on the main thread, which here steps the engine.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, server.handle_exit)
        _freeze_startup_heap()
        http = threading.Thread(target=_run_http, args=(server, engine), name="dyno-http")
        logger.info("serving %s on %s:%d", engine.engine.info.model_name, args.host or "0.0.0.0", args.port)
        http.start()
        engine.run_loop()  # returns once the HTTP server has stopped (or the engine failed)
        server.should_exit = True
        http.join()
        if not server.started:  # e.g. the port is taken: uvicorn logged why and gave up
            raise OSError(f"could not serve on {args.host or '0.0.0.0'}:{args.port} (see the log above)")
    finally:
        engine.shutdown()


def _freeze_startup_heap() -> None:
    """Keep the ~450k objects of start-up (torch, transformers, the app) out of every later
    garbage collection. A full collection walks them all on the engine's thread, under the GIL:
    at the default model, 90-145 ms each, several a benchmark run. The server holds one engine
    for its life, so nothing frozen here was going to be freed anyway."""
    gc.collect()
    gc.freeze()


def _run_http(server: uvicorn.Server, engine: AsyncLLM) -> None:
    try:
        server.run()
    finally:
        engine.shutdown()
