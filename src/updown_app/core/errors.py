"""Domain errors: what a use case refuses and why, by kind. Only the HTTP layer (``http/errors.py``) turns a kind
into a status and a JSON body; the CLI and the importer read ``code`` and ``message`` as they are."""

from __future__ import annotations


class DomainError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidInput(DomainError):
    """The request names or declares something the rules refuse; nothing changed."""


class TooLarge(DomainError):
    """Larger than the configured limit."""


class NotFound(DomainError):
    """No such thing (or nothing this caller may learn exists)."""


class Conflict(DomainError):
    """The request contradicts what is recorded (a taken name, a busy or finished upload)."""


class Expired(DomainError):
    """It existed, and its time is over."""


class Unauthenticated(DomainError):
    """No valid credentials; ``challenge`` is the scheme (and parameters) the caller should use."""

    def __init__(self, code: str, message: str, challenge: str) -> None:
        super().__init__(code, message)
        self.challenge = challenge


class Forbidden(DomainError):
    """Known caller, not allowed."""


class UpstreamFailed(DomainError):
    """A service this one depends on answered, wrongly."""


class Unavailable(DomainError):
    """A dependency is down; retry after ``retry_after`` seconds."""

    def __init__(self, code: str, message: str, retry_after: int = 30) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class StoreUnavailable(Unavailable):
    """The object store is down (code ``storage_unavailable``)."""

    def __init__(self, message: str = "the object store is unavailable; retry later", retry_after: int = 30) -> None:
        super().__init__("storage_unavailable", message, retry_after)
