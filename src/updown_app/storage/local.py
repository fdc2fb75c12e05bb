"""Local-directory backend: the embedded default for a single node.

Objects are written to ``<root>/.tmp/<random>`` and renamed into place only after the whole body arrived and its
size and MD5 matched, so readers never see a partial object. Writes and large reads go through the default thread
pool, one hop per chunk; small reads (a whole object up to 256 KiB, or a 64 KiB piece) are done inline on the
event loop, because a thread hand-off costs more than a page-cache read that size and dominated small-file
throughput. ``get`` starts with a 64 KiB read and then reads what the consumer asks for through ``asend`` (the
download response sizes reads to the client's pace), or ``chunk_size`` by default. ``open_file`` gives the object's
file descriptor to a plain-HTTP download, which the server then sends with ``sendfile`` (``http/zerocopy.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

from updown_app.storage.base import (
    LocalFile,
    ObjectInfo,
    Storage,
    StorageError,
    StorageIntegrityError,
    StorageUnavailableError,
)
from updown_app.storage.writeback import Writeback

INLINE_READ_MAX = 256 * 1024
INITIAL_READ = 64 * 1024


class LocalStorage(Storage):
    name = "local"

    def __init__(self, root: Path, chunk_size: int = 1024 * 1024) -> None:
        self.root = root
        self._root = str(root)
        self.tmp = root / ".tmp"
        self.chunk_size = chunk_size
        self.tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        # Strings, not Path objects: this is on every download's path.
        if not key or any(p in ("", ".", "..") or p.startswith(".") for p in key.split("/")):
            raise ValueError(f"invalid object key {key!r}")
        return os.path.join(self._root, key)

    async def put(self, key: str, body: AsyncIterator[bytes], *, size: int, md5: str) -> None:
        final = self._path(key)
        tmp = self.tmp / secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        digest = None if getattr(body, "verifies_md5", False) else hashlib.md5(usedforsecurity=False)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        written = 0
        writeback = Writeback(fd)  # the disk writes overlap the transfer; the fsync below waits for the rest

        def write(chunk: bytes) -> None:
            if digest is not None:
                digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            writeback.wrote(len(chunk))

        try:
            async for chunk in body:
                written += len(chunk)
                if written > size:
                    raise StorageIntegrityError(f"body longer than the declared {size} bytes")
                await loop.run_in_executor(None, write, chunk)
            if written != size:
                raise StorageIntegrityError(f"body has {written} bytes, {size} declared")
            if digest is not None and digest.hexdigest() != md5.lower():
                raise StorageIntegrityError("MD5 of the body does not match the declared MD5")
            await loop.run_in_executor(None, os.fsync, fd)
            os.close(fd)
            fd = -1
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, final)
            except FileNotFoundError:  # stalled past the sweeper's grace period, which removed it
                raise StorageUnavailableError("the partial write was removed while stalled; retry") from None
        except BaseException:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            raise

    def open_file(self, key: str) -> LocalFile:
        try:
            fd = os.open(self._file(key), os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            return LocalFile(fd, os.fstat(fd).st_size)
        except BaseException:
            os.close(fd)
            raise

    async def get(self, key: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, int | None]:
        local = self.open_file(key)
        fd = local.fd
        try:
            remaining = local.size - offset if length is None else length
            if remaining <= INLINE_READ_MAX:
                data = os.pread(fd, remaining, offset)
                if len(data) != remaining:
                    raise StorageError(f"object {key} is shorter than expected")
                if data:
                    yield data
                return
            loop = asyncio.get_running_loop()
            want: int | None = INITIAL_READ  # a consumer may ask for other sizes with asend()
            while remaining > 0:
                n = min(want or self.chunk_size, remaining)
                if n <= INITIAL_READ:
                    chunk = os.pread(fd, n, offset)
                else:
                    chunk = await loop.run_in_executor(None, os.pread, fd, n, offset)
                if not chunk:
                    raise StorageError(f"object {key} is shorter than expected")
                offset += len(chunk)
                remaining -= len(chunk)
                want = yield chunk
        finally:
            os.close(fd)

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime)

    async def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        st = full.stat()
                    except FileNotFoundError:  # removed meanwhile
                        continue
                    yield ObjectInfo(key=key, size=st.st_size, modified=st.st_mtime)

    async def sweep_partials(self, older_than: float) -> tuple[int, int]:
        """Partial writes in ``.tmp`` not written to since ``older_than``: what ``kill -9`` during an upload
        leaves. A live write touches its file with every chunk, so the grace period protects it on every unit
        sharing this directory."""
        files = size = 0
        with os.scandir(self.tmp) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                    if st.st_mtime >= older_than:
                        continue
                    os.unlink(entry.path)
                except FileNotFoundError:  # finished, or removed by another unit's sweep
                    continue
                files += 1
                size += st.st_size
        return files, size

    async def check(self) -> None:
        probe = self.tmp / f"ready-{secrets.token_hex(4)}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"local storage at {self.root} is not writable: {exc.strerror}") from exc
