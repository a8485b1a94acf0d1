"""dyno's OpenAI-compatible HTTP server (`dyno serve`): app, handlers, and its operational parts."""
