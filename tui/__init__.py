"""dyno's operator dashboard (Textual): launch and watch servers, bench, tune, replay.

Only dyno/cli.py imports this package (through tui.cli).
"""

from tui.app import DynoApp
from tui.session import ServerHandle, Session

__all__ = ["DynoApp", "ServerHandle", "Session"]
