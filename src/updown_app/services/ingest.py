"""The one ingest path: verify, dedupe, put, record, undo. The simple upload, the end of a resumable upload, the
mirror and pull-through all store a file through ``Ingest.ingest``; only where the bytes come from differs
(a ``Content``).

Digests. An upload's content hashes what verification needs (size, MD5, SHA-256); its record gets SHA-1 and
SHA-512 off the request path: copied from a record of the same content when there is one, else computed from the
stored object in the background (``services/digest_completion.py``), which publishing awaits. The mirror and the
pull-through hash all four as they stream (the signed index declares the SHA-512).

Undo without the database. A failed ingest (refused bytes, a lost name race, the database gone) removes the object
it created, and never one that existed before it:

- ``created`` is decided by the ingest itself, not asked of the database afterwards: an object recorded for this
  content (dedupe) is only read through, never written; the canonical key is looked at just before the put, and an
  object already there (another ingest's, or an earlier orphan) makes this ingest not its creator.
- The undo asks the database whether some file now names the object, because a concurrent ingest of the same
  content may have looked at the key in the same instant, put the same bytes and recorded them; when it did, the
  object stays. When that question cannot be answered (the database is down: the case that left 100 MiB orphans),
  the object this ingest created is removed anyway: an orphan is certain otherwise, while a concurrent record
  needs the database to have answered the other ingest and not this one within the same few milliseconds.
  That residual window is logged (``undo without database``) so that an operator can check it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from updown_app.core.digests import (
    ALL,
    VERIFIED,
    Declared,
    DigestMismatchError,
    Digests,
    MultiHasher,
    verified_stream,
)
from updown_app.core.errors import Conflict, StoreUnavailable
from updown_app.core.names import object_key
from updown_app.metadata.models import File, FileState
from updown_app.metadata.repository import DuplicateFileError, Repository, utcnow
from updown_app.services.digest_completion import DigestCompletion
from updown_app.services.upload_fields import UploadFields
from updown_app.storage.base import Storage, StorageIntegrityError, StorageUnavailableError

log = logging.getLogger("updown.ingest")


class Content(Protocol):
    """The bytes of one ingest, verified against what was declared, however their source delivers them."""

    async def drain(self) -> Digests:
        """Read and verify everything without storing it (the content is stored already)."""

    async def put(self, storage: Storage, key: str) -> Digests:
        """Verify while storing under ``key``; nothing is left under ``key`` when verification fails."""


class StreamContent:
    """A body streamed once, through the verifying stream, to the store (upload, mirror, pull-through).
    ``all_digests``: hash SHA-1 and SHA-512 too (imports), else only what verification needs (uploads)."""

    def __init__(
        self, body: AsyncIterator[bytes], declared: Declared, chunk_size: int, *, all_digests: bool = False
    ) -> None:
        self.declared = declared
        self.hasher = MultiHasher(ALL if all_digests else VERIFIED)
        self.checked = verified_stream(body, declared, self.hasher, chunk_size)

    async def drain(self) -> Digests:
        async for _ in self.checked:
            pass
        return self.hasher.digests()

    async def put(self, storage: Storage, key: str) -> Digests:
        await storage.put(key, self.checked, size=self.declared.size, md5=self.declared.md5)
        return self.hasher.digests()


class KnownContent:
    """Content already stored and recorded here under another name: its digests are those of that record (SHA-1
    and SHA-512 included only when that record has them already)."""

    def __init__(self, digests: Digests) -> None:
        self.digests = digests

    async def drain(self) -> Digests:
        return self.digests

    async def put(self, storage: Storage, key: str) -> Digests:
        raise AssertionError("known content is only recorded, never stored")  # ingest dedupes it first


@dataclass(frozen=True)
class Stored:
    key: str
    created: bool  # this ingest put the object where there was none: only then may its undo remove it
    digests: Digests


def file_record(digests: Digests, fields: UploadFields, key: str, key_id: str) -> File:
    """The unpublished record of verified content."""
    return File(
        id=uuid.uuid4().hex,
        package=fields.package,
        revision=fields.revision,
        filename=fields.filename,
        size=digests.size,
        md5=digests.md5,
        sha1=digests.sha1,
        sha256=digests.sha256,
        sha512=digests.sha512,
        object_key=key,
        visibility=fields.visibility.value,
        state=FileState.unpublished.value,
        created_by=key_id,
        created_at=utcnow(),
    )


DUPLICATE = "a file with this package, revision and filename exists"


class Ingest:
    """``completion``: where a record still missing SHA-1/SHA-512 is handed to be completed in the background
    (None: left to whatever completes it later, publishing or the start-up catch-up)."""

    def __init__(self, repository: Repository, storage: Storage, completion: DigestCompletion | None = None) -> None:
        self.repository = repository
        self.storage = storage
        self.completion = completion

    async def stored_object(self, sha256: str) -> str | None:
        """The key of this content when a file records it and the store still has it (dedupe)."""
        existing = await self.repository.object_for_sha256(sha256)
        if existing is not None and await self.storage.head(existing) is not None:
            return existing
        return None

    async def ingest(self, fields: UploadFields, content: Content, key_id: str, *, sha512: str | None = None) -> File:
        """Verify and store ``content`` (once per content), record it unpublished; undo on any failure.
        ``sha512``: the SHA-512 a signed index declares (imports). Raises ``DigestMismatchError`` (refused bytes),
        ``Conflict`` (the name was taken meanwhile), ``Unavailable`` (the store is down)."""
        stored = await self.put(fields.declared, content)
        try:
            digests = stored.digests
            if not digests.complete and not stored.created:  # content stored before: maybe recorded complete
                digests = await self.known_digests(digests)
            # A SHA-512 still to be computed is of bytes that matched the signed SHA-256 (content recorded here).
            if sha512 is not None and digests.sha512 is not None and digests.sha512 != sha512:
                raise DigestMismatchError("sha512", "SHA-512 does not match the signed index")
            record = file_record(digests, fields, stored.key, key_id)
            try:
                await self.repository.add(record, key_id)
            except DuplicateFileError:
                raise Conflict("duplicate", DUPLICATE) from None
        except BaseException:
            await self.undo(stored)
            raise
        if not digests.complete and self.completion is not None:
            self.completion.schedule(record.id)
        return record

    async def known_digests(self, digests: Digests) -> Digests:
        """``digests`` with the SHA-1 and SHA-512 of a completed record of the same content (same size and
        SHA-256), when there is one: identical content is hashed once."""
        known = await self.repository.known_digests(digests.sha256, digests.size)
        if known is None:
            return digests
        return Digests(digests.size, digests.md5, known[0], digests.sha256, known[1])

    async def put(self, declared: Declared, content: Content) -> Stored:
        try:
            existing = await self.stored_object(declared.sha256)
            if existing is not None:
                # Identical content is stored once; the body is still read and verified against what was signed.
                return Stored(existing, False, await content.drain())
            key = object_key(declared.sha256)
            created = await self.storage.head(key) is None
            return Stored(key, created, await content.put(self.storage, key))
        except StorageIntegrityError as exc:
            raise DigestMismatchError("md5", f"the object store refused the body: {exc}") from None
        except StorageUnavailableError:
            raise StoreUnavailable() from None

    async def undo(self, stored: Stored) -> None:
        """Remove the object this ingest created unless a file records it; see the module's docstring."""
        if not stored.created:
            return
        try:
            if await self.repository.object_in_use(stored.key):
                return
        except Exception:
            log.warning("undo without database: removing the object this ingest created", extra={"key": stored.key})
        try:
            await self.storage.delete(stored.key)
        except Exception:  # the ingest's own error is what the caller must see
            log.exception("could not remove the object of a failed ingest", extra={"key": stored.key})
