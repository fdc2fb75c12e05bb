"""Fixtures of the mirroring and pull-through tests: an upstream updown on the test Swift with a signed index."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import need_service
from tests.support.server import ServerProcess, make_server
from tests.support.swift import SWIFT_URL, swift_env
from tests.support.tls_front import tls_front
from tests.support.tuf_index import IndexKeys, make_index_keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> IndexKeys:
    return make_index_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def container(request: pytest.FixtureRequest) -> str:
    return f"{request.module.__name__.rsplit('_', 1)[-1]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, keys: IndexKeys, container: str) -> Iterator[ServerProcess]:
    env = {**swift_env(container), **keys.env(), "UPDOWN_LOOKUP_CACHE_TTL": "0"}
    srv = make_server(tmp_path_factory.mktemp("upstream"), extra_env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tls_swift(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(https URL, its CA's PEM): HAProxy terminating TLS for localhost in front of the test Swift."""
    swift = need_service("Swift", SWIFT_URL)
    with tls_front(tmp_path_factory.mktemp("tls-swift"), swift, probe="/info") as front:
        yield front.urls[0], front.ca
