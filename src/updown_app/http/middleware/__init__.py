"""http/middleware."""
