"""`dyno tui`: the operator dashboard, in this terminal or (`--web`) in a browser."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tui import slo as slo_mod
from tui.recording import RecordingError, default_recording_path, read_recording

SCREENS = ("servers", "monitor", "bench", "compare", "tune", "reports", "help")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dyno tui", description=__doc__)
    p.add_argument("--attach", action="append", default=[], metavar="URL",
                   help="attach to an OpenAI-compatible server at start (repeatable)")
    p.add_argument("--api-key", help="API key for attached servers")
    p.add_argument("--slo", action="append", default=[], metavar="METRIC_STAT=LIMIT",
                   help="e.g. ttft_p99=500ms, itl_p99=50ms (repeatable)")
    p.add_argument("--results-dir", type=Path, default=Path("dyno-results"),
                   help="where bench results, studies and session recordings go")
    p.add_argument("--record", type=Path, help="session recording file (default: "
                   "RESULTS_DIR/tui-sessions/session-<time>.jsonl)")
    p.add_argument("--no-record", action="store_true", help="do not record this session")
    p.add_argument("--replay", type=Path, metavar="FILE", help="play back a recorded session")
    p.add_argument("--screen", default="servers", choices=SCREENS, help="screen to open first")
    p.add_argument("--web", action="store_true", help="serve the app to a browser (textual-serve)")
    p.add_argument("--host", default="127.0.0.1", help="--web: address to listen on")
    p.add_argument("--port", type=int, default=8566, help="--web: port to listen on")
    p.add_argument("--public-url", help="--web: the URL browsers use, when it is not "
                   "http://HOST:PORT (e.g. listening on 0.0.0.0 behind a proxy)")
    return p


def _fail(message: str) -> int:
    print(f"dyno tui: {message}", file=sys.stderr)
    return 2


def make_app(args: argparse.Namespace):
    """The app for these arguments (raises SloError / RecordingError on bad input)."""
    from tui.app import DynoApp
    from tui.session import Session

    slos = slo_mod.SloSet.from_texts(args.slo)
    if args.replay is not None:
        from tui.replay import Replayer
        records = read_recording(args.replay)
        session = Session(args.results_dir, slos, is_replay=True)
        return DynoApp(session, first_screen="monitor", replayer=Replayer(session, records))
    recording = None if args.no_record else (args.record or default_recording_path(args.results_dir))
    session = Session(args.results_dir, slos, recording=recording)
    for url in args.attach:
        session.attach(url, args.api_key)
    return DynoApp(session, first_screen=args.screen)


def serve_web(argv: list[str], host: str, port: int, public_url: str | None) -> int:
    """textual-serve runs `dyno tui` (without --web) per browser connection."""
    from textual_serve.server import Server

    rest = [a for a in argv if a != "--web"]
    command = shlex.join([sys.executable, "-m", "dyno", "tui", *_drop_web_address(rest)])
    Server(command, host=host, port=port, title="dyno tui", public_url=public_url).serve()
    return 0


def _drop_web_address(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--host", "--port", "--public-url"):
            skip = True
        elif not a.startswith(("--host=", "--port=", "--public-url=")):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    if args.web:
        return serve_web(argv, args.host, args.port, args.public_url)
    try:
        app = make_app(args)
    except (slo_mod.SloError, RecordingError) as e:
        return _fail(str(e))
    except OSError as e:  # e.g. a results dir that cannot be written
        return _fail(f"{e.filename or ''}: {e.strerror or e}; pass a writable --results-dir")
    app.run()
    return 0
