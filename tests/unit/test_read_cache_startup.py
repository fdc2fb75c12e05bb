"""Backend cache units need presigned URLs: a storage that can't make them is refused at start-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.server import make_server
from updown_app.settings import Settings
from updown_app.storage import create_storage
from updown_app.storage.breaker import GuardedStorage
from updown_app.storage.read_cache import ReadCacheStorage
from updown_app.storage.swift import SwiftStorage

BACKENDS = {"updown-cache-backend/0": "http://127.0.0.1:21080"}


def swift(**extra: object) -> dict[str, object]:
    return {
        "backend": "swift",
        "swift": {"auth": "tempauth", "auth_url": "http://127.0.0.1:9/auth/v1.0", "username": "a:b", **extra},
    }


def test_local_storage_with_backend_caches_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, caches={"backends": BACKENDS})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"storage\.backend 'local' cannot make presigned URLs"):
        create_storage(settings)


def test_swift_without_temp_url_key_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, storage=swift(), caches={"backends": BACKENDS})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"storage\.swift\.temp_url_key is not"):
        create_storage(settings)


def test_swift_with_a_key_reads_through_the_caches(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        storage=swift(temp_url_key="k"),  # type: ignore[arg-type]
        caches={"backends": BACKENDS},  # type: ignore[arg-type]
    )
    storage = create_storage(settings)
    assert isinstance(storage, ReadCacheStorage) and isinstance(storage.inner, GuardedStorage)
    assert isinstance(storage.inner.inner, SwiftStorage)  # a store whose calls fail skipped, under the cache
    assert storage.unit_for("any/key") == "updown-cache-backend/0"
    assert not isinstance(create_storage(Settings(data_dir=tmp_path)), ReadCacheStorage)  # none configured


def test_updown_serve_refuses_to_start(tmp_path: Path) -> None:
    srv = make_server(tmp_path, tls=False, extra_env={"UPDOWN_CACHES__BACKENDS": json.dumps(BACKENDS)})
    with pytest.raises(RuntimeError) as failed:
        srv.start(timeout=20)
    assert "cannot make presigned URLs for the backend cache units" in str(failed.value)
