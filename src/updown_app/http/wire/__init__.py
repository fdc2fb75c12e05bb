"""http/wire."""
