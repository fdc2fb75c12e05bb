"""Fixtures shared by every suite. Services (PostgreSQL, Swift) come from scripts/services/*.sh via env vars;
with UPDOWN_REQUIRE_SERVICES=1 (set by scripts/test.sh) a missing service fails instead of skipping."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess, make_server

POSTGRES_URL = os.environ.get("UPDOWN_TEST_POSTGRES_URL")


def need_service(name: str, value: str | None) -> str:
    if value:
        return value
    if os.environ.get("UPDOWN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{name} is required (started by scripts/test.sh) but not configured")
    pytest.skip(f"{name} not running (run the tests with scripts/test.sh)")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty database on the test PostgreSQL, dropped afterwards."""
    import asyncio

    import asyncpg

    base = need_service("PostgreSQL", POSTGRES_URL)
    name = "t_" + uuid.uuid4().hex[:12]
    admin = base.replace("postgresql+asyncpg://", "postgresql://")

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    head, _, _ = base.rpartition("/")
    yield f"{head}/{name}"
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One HTTPS single-node server (SQLite + local storage) shared by a module's tests."""
    srv = make_server(tmp_path_factory.mktemp("updown")).start()
    yield srv
    srv.stop()
