"""caches.units_file: the cache units the app sees follow the file the charm rewrites (no restart)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from updown_app.caches.units import CacheUnits
from updown_app.settings import CacheSettings
from updown_app.storage.local import LocalStorage
from updown_app.storage.read_cache import ReadCacheStorage


def write(path: Path, content: dict[str, object]) -> None:
    path.write_text(json.dumps(content))
    stat = path.stat()  # a distinct mtime even within the file system's timestamp granularity
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_backend_ring_follows_the_units_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    units_file = tmp_path / "units.json"
    units = CacheUnits.from_settings(CacheSettings(units_file=units_file))
    storage = ReadCacheStorage(LocalStorage(tmp_path / "objects"), units)
    keys = [f"objects/{i:04d}" for i in range(200)]
    assert {storage.unit_for(k) for k in keys} == {None}  # no units yet: the store is read directly

    write(units_file, {"backends": {"read/0": "http://127.0.0.1:1", "read/1": "http://127.0.0.1:2"}})
    units.refresh(force=True)
    two = {k: storage.unit_for(k) for k in keys}
    assert set(two.values()) == {"read/0", "read/1"}

    write(units_file, {"backends": {"read/0": "http://127.0.0.1:1", "read/1": "http://127.0.0.1:2",
                                    "read/2": "http://127.0.0.1:3"}})  # fmt: skip
    units.refresh(force=True)
    three = {k: storage.unit_for(k) for k in keys}
    moved = [k for k in keys if three[k] != two[k]]
    assert moved and all(three[k] == "read/2" for k in moved)  # only the new unit's share moves

    write(units_file, {"backends": {"read/0": "http://127.0.0.1:1"}, "frontends": ["ftp://bad"]})
    units.refresh(force=True)
    units.refresh(force=True)
    assert {storage.unit_for(k) for k in keys} == {"read/0", "read/1", "read/2"}  # invalid: kept as it was
    invalid = [r for r in caplog.records if r.getMessage().startswith("cache units file is invalid")]
    assert len(invalid) == 1  # said once, not on every look at the unchanged file

    write(units_file, {"backends": {"read/0": "http://127.0.0.1:1"}})  # mended: taken at once
    units.refresh(force=True)
    assert {storage.unit_for(k) for k in keys} == {"read/0"}

    units_file.unlink()
    units.refresh(force=True)
    assert units.frontends == [] and {storage.unit_for(k) for k in keys} == {None}
