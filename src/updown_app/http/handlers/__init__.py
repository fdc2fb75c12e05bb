"""http/handlers."""
