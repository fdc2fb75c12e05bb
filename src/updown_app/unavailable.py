"""The domain error for a dependency that cannot answer now (the database, the object store): raised by the
storage and metadata layers, turned into ``503`` with ``Retry-After`` by the HTTP layer only (app.py), never a 500."""

from __future__ import annotations


class DependencyUnavailable(Exception):
    """``dependency`` ("database", "storage") is down, hung or refusing connections; retrying later may work."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message)
        self.dependency = dependency
