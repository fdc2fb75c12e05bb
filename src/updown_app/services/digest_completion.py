"""Digest completion: the SHA-1 and SHA-512 of a file, computed from its stored object after the upload answered.

An upload hashes on its request path only what verification needs (size, MD5, SHA-256; ``core/digests.py``), so
its record starts without SHA-1 and SHA-512. This service reads the stored object back (``Storage.get``), hashes
SHA-1, SHA-256 and SHA-512, checks size and SHA-256 against the record again (which also proves the bytes the
store holds are the ones verified) and records the two missing digests.

- After an ingest, in the background (``schedule``): one file at a time, so that completions never take more
  than one core's share from the requests; errors are logged, and the file simply stays incomplete.
- When a file is published (``complete``, from the catalog): publishing awaits the completion running for that
  file, or runs one itself; a file is never published without all four digests (the repository refuses it).
- Soon after start-up and then at every sweep interval (``catch_up``): files a crash or an outage left
  incomplete.

A stored object that does not match its record is logged as an error and refused (``StoredObjectInvalid``): such
a file is never published.
"""

from __future__ import annotations

import asyncio
import logging

from updown_app.core.digests import MultiHasher
from updown_app.core.errors import Conflict, NotFound, StoreUnavailable
from updown_app.malloc import release_free_memory
from updown_app.metadata.models import File
from updown_app.metadata.repository import Repository
from updown_app.storage.base import Storage, StorageUnavailableError

log = logging.getLogger("updown.digests")

COMPLETED = ("sha1", "sha256", "sha512")  # SHA-256 again: the check that the stored bytes are the verified ones
THREAD_MIN = 64 * 1024  # smaller reads are hashed inline: a pool hand-off would cost more than it saves


class StoredObjectInvalid(Conflict):
    """The stored object of a file is missing or does not match its record; the file cannot be published."""


class DigestCompletion:
    def __init__(self, repository: Repository, storage: Storage, concurrency: int = 1) -> None:
        self.repository = repository
        self.storage = storage
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[File]] = {}  # file id -> its one computation
        self._background: dict[str, asyncio.Task[None]] = {}  # held here: the loop keeps only weak references

    def schedule(self, file_id: str) -> None:
        """Complete the file's digests in the background, after those scheduled before it (once: a file already
        waiting is not queued again)."""
        if file_id in self._background:
            return
        task = asyncio.create_task(self._complete_in_background(file_id))
        self._background[file_id] = task
        task.add_done_callback(
            lambda done: self._background.pop(file_id) if self._background.get(file_id) is done else None
        )

    async def catch_up(self) -> int:
        """Schedule every file still missing digests (those a crash or an outage left) that is not queued yet;
        returns how many were scheduled."""
        missing = [file_id for file_id in await self.repository.missing_digests() if file_id not in self._background]
        for file_id in missing:
            self.schedule(file_id)
        if missing:
            log.info("completing the digests of earlier uploads", extra={"files": len(missing)})
        return len(missing)

    async def complete(self, file_id: str) -> File:
        """The file with all four digests: those recorded, or computed now (joining a computation already
        running for it). ``NotFound``, ``StoreUnavailable``, ``StoredObjectInvalid``."""
        running = self._running.get(file_id)
        if running is None:
            running = asyncio.create_task(self._compute(file_id))
            self._running[file_id] = running
            running.add_done_callback(lambda task: self._finished(file_id, task))
        # Shielded: a caller that goes away (a client disconnecting from a publish) does not abort the reading.
        return await asyncio.shield(running)

    async def wait_idle(self) -> None:
        """Until every scheduled completion has run (tests, and a clean stop)."""
        while self._background:
            await asyncio.gather(*self._background.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel what is scheduled or running; what is left incomplete is caught up at the next start."""
        tasks = [*self._background.values(), *self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _finished(self, file_id: str, task: asyncio.Task[File]) -> None:
        if self._running.get(file_id) is task:
            del self._running[file_id]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter got it already, or none is left to

    async def _complete_in_background(self, file_id: str) -> None:
        async with self._slots:
            try:
                await self.complete(file_id)
            except StoredObjectInvalid:
                pass  # logged as an error where it was found
            except NotFound:
                pass  # removed meanwhile
            except Exception:  # the file stays incomplete: publishing or the next start completes it
                log.exception("completing digests failed", extra={"file_id": file_id})

    async def _compute(self, file_id: str) -> File:
        file = await self.repository.get(file_id)
        if file is None:
            raise NotFound("unknown_file", "no file with this id")
        if file.sha1 is not None and file.sha512 is not None:
            return file
        hasher = MultiHasher(COMPLETED)
        loop = asyncio.get_running_loop()
        try:
            async for chunk in self.storage.get(file.object_key):
                if len(chunk) >= THREAD_MIN:
                    await hasher.update_in_threads(loop, chunk)
                else:
                    hasher.update(chunk)
        except StorageUnavailableError:
            raise StoreUnavailable() from None
        except KeyError:
            log.error("stored object missing: digests cannot be completed", extra=_about(file))
            raise StoredObjectInvalid("object_missing", "the stored object of this file is missing") from None
        finally:
            release_free_memory()  # what the upload's and this read's buffers left in malloc's heaps (malloc.py)
        if hasher.size != file.size or hasher.hexdigest("sha256") != file.sha256:
            log.error(
                "stored object does not match its record: the file will not be published",
                extra={**_about(file), "stored_size": hasher.size, "stored_sha256": hasher.hexdigest("sha256")},
            )
            raise StoredObjectInvalid("stored_object_mismatch", "the stored object does not match the file's record")
        sha1, sha512 = hasher.hexdigest("sha1"), hasher.hexdigest("sha512")
        completed = await self.repository.complete_digests(file.id, sha1, sha512)
        if completed is None:
            raise NotFound("unknown_file", "no file with this id")
        log.info("digests completed", extra={"file_id": file.id, "size": file.size})
        return completed


def _about(file: File) -> dict[str, object]:
    return {"file_id": file.id, "key": file.object_key, "size": file.size, "sha256": file.sha256}
