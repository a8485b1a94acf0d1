"""One screen per module; the app installs them by name (see tui/app.py)."""
