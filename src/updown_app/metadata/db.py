"""Engine and session factory for SQLite (embedded) and PostgreSQL (production), and running migrations.

A database that is down or hung must answer fast and as what it is: connecting, waiting for a pooled connection
and each statement are bounded (PostgreSQL), and a session whose database is unreachable, refusing, shutting down
or timing out raises ``DependencyUnavailable`` (the HTTP layer answers 503 with Retry-After), not the driver's
error (an unhandled 500)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from updown_app.core.errors import DependencyUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Seconds (PostgreSQL). Each well below the frontends' timeouts (Varnish's first byte: 60 s): a hung database is
# a 503 within seconds. Statements are small lookups and writes; migrations run without the statement bound.
CONNECT_TIMEOUT = 3.0
POOL_TIMEOUT = 5.0
STATEMENT_TIMEOUT = 10.0
# SQLSTATE classes of a database that cannot serve now: connection exception, insufficient resources (too many
# connections), operator intervention (shutting down, starting up, statement timeout).
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database cannot be reached or answer now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OSError, TimeoutError, sa_exc.TimeoutError, sa_exc.InterfaceError)):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_UNAVAILABLE_SQLSTATE_CLASSES):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


class _Session(AsyncSession):
    """A session whose database failures that mean "unavailable" leave it as DependencyUnavailable."""

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        try:
            await super().__aexit__(type_, value, traceback)
        except Exception as exc:
            if unavailable(exc):
                raise DependencyUnavailable("database", "the database is unavailable") from exc
            raise
        if isinstance(value, Exception) and not isinstance(value, DependencyUnavailable) and unavailable(value):
            raise DependencyUnavailable("database", "the database is unavailable") from value


def create_engine(url: str, *, statement_timeout: float | None = STATEMENT_TIMEOUT) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers (downloads) run while an upload commits; foreign keys are off by default.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
    if statement_timeout is not None:
        connect_args["command_timeout"] = statement_timeout
    return create_async_engine(
        url, pool_size=10, max_overflow=10, pool_pre_ping=True, pool_timeout=POOL_TIMEOUT, connect_args=connect_args
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=_Session, expire_on_commit=False)


def alembic_config() -> Config:
    from alembic.config import Config  # alembic (with mako and pygments, ~10 MB) only where a migration runs

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; safe to run on every start)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)
