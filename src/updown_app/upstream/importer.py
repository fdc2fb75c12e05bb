"""An upstream updown's signed index, read with python-tuf's ``ngclient.Updater``, and the verified import of its
files into this instance: what ``updown mirror`` and the pull-through downloads share.

Every byte imported is checked twice: against the length and SHA-256/SHA-512 of the upstream's signed targets
metadata (so a tampered file or a lying upstream store is refused), then, while it is written to our storage,
by the one ingest path (``services/ingest.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import httpx

from updown_app.core.digests import Declared, DigestMismatchError
from updown_app.core.errors import Conflict, InvalidInput
from updown_app.core.names import PACKAGE_RE, REVISION_RE, check_filename, parse_channels
from updown_app.index.client import CHUNK, http_client
from updown_app.metadata.models import File, FileState, Visibility
from updown_app.services.catalog import Catalog
from updown_app.services.ingest import Content, Ingest, StreamContent
from updown_app.services.upload_fields import UploadFields

if TYPE_CHECKING:  # python-tuf (and cryptography, ~10 MB) is loaded only where an upstream index is read
    from tuf.api.metadata import TargetFile
    from tuf.ngclient import Updater

log = logging.getLogger("updown.upstream")
IMPORT_KEY_ID = "mirror"  # who the history of an imported file names


class RefusedError(Exception):
    """The upstream's metadata or a file's bytes failed verification; ``reason`` says which check."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UpstreamFailure(Exception):
    """The upstream did not deliver a target (an error status, a dropped connection): nothing was refused, a later
    run may succeed. ``reason`` is ``upstream_error`` or ``unreachable``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def refusal_reason(exc: Exception) -> str:
    """A short name for why the upstream's metadata was not accepted (for summaries and metrics)."""
    from tuf.api import exceptions as tuf_errors

    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return "upstream_error"
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError | tuf_errors.LengthOrHashMismatchError):
        return "bad_metadata"  # longer than allowed, or not the length/hashes its parent role signed
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return "expired_metadata"
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return "rollback"
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return "bad_signature"
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return "hash_mismatch"
    if isinstance(exc, tuf_errors.RepositoryError):
        return "bad_metadata"
    return "unreachable"


@dataclass(frozen=True)
class TargetName:
    package: str
    revision: str
    filename: str


def split_target(path: str) -> TargetName:
    parts = path.split("/")
    if len(parts) != 3 or not PACKAGE_RE.match(parts[0]) or not REVISION_RE.match(parts[1]):
        raise RefusedError("bad_target", f"target path {path!r} is not package/revision/filename")
    try:
        check_filename(parts[2])
    except InvalidInput:
        raise RefusedError("bad_target", f"target path {path!r} has an invalid filename") from None
    return TargetName(*parts)


def state_dir_for(data_dir: Path, upstream: str) -> Path:
    """Where the upstream's trusted metadata and partial downloads are kept, one directory per upstream."""
    parts = urlsplit(upstream)
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{parts.hostname}_{parts.port or ''}{parts.path}").strip("_")
    return data_dir / "upstreams" / name


class UpstreamIndex:
    def __init__(
        self,
        upstream: str,
        root_of_trust: bytes,
        state_dir: Path,
        ca_bundle: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = upstream.rstrip("/")
        self.root_of_trust = root_of_trust
        self.state_dir = state_dir
        self.metadata_dir = state_dir / "metadata"
        self.partial_dir = state_dir / "partial"
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.http = http_client(ca_bundle, timeout)
        self.updater: Updater | None = None

    def close(self) -> None:
        self.http.close()

    def refresh(self) -> None:
        """Fetch and verify the upstream's newest metadata (root chain, timestamp, snapshot, targets).

        Raises python-tuf's errors: bad signatures, expired metadata, rollbacks, unreachable upstream. The
        metadata directory keeps what was last trusted, so a later rollback is refused across runs too.
        """
        from tuf.ngclient import Updater, UpdaterConfig

        from updown_app.index.fetcher import HttpxFetcher

        updater = Updater(
            str(self.metadata_dir),
            f"{self.base_url}/-/tuf/metadata/",
            None,
            f"{self.base_url}/",
            fetcher=HttpxFetcher(self.http),
            config=UpdaterConfig(prefix_targets_with_hash=False),
            bootstrap=self.root_of_trust,
        )
        updater.refresh()
        self.updater = updater

    def expired(self) -> bool:
        """Whether any top-level metadata trusted so far has expired by now: a replayed (frozen) index is only
        refused by python-tuf at the next refresh, and between refreshes the last one is reused."""
        assert self.updater is not None, "refresh() first"
        trusted = self.updater._trusted_set
        return any(role.is_expired() for role in (trusted.root, trusted.timestamp, trusted.snapshot, trusted.targets))

    def targets(self) -> dict[str, TargetFile]:
        """Every target of the verified top-level targets metadata (ngclient looks targets up one at a time; the
        list comes from its trusted set, which holds only verified metadata)."""
        assert self.updater is not None, "refresh() first"
        trusted = self.updater._trusted_set.targets.targets
        return dict(trusted)

    def targetinfo(self, path: str) -> TargetFile | None:
        assert self.updater is not None, "refresh() first"
        return self.updater.get_targetinfo(path)

    def url(self, path: str) -> str:
        return f"{self.base_url}/" + quote(path, safe="/!$&'()*+,;=:@")

    def download(self, info: TargetFile) -> Path:
        """Download a target to a partial file, resuming what an earlier run left, then verify its length and
        hashes against the signed metadata; RefusedError (and the partial file removed) when they differ."""
        from tuf.api import exceptions as tuf_errors

        sha256 = info.hashes["sha256"]
        partial = self.partial_dir / sha256
        have = partial.stat().st_size if partial.exists() else 0
        headers = {"x-forwarded-proto": "https"} if self.base_url.startswith("http://") else {}
        if 0 < have < info.length:
            headers.update({"range": f"bytes={have}-", "if-range": f'"{sha256}"'})
        if have < info.length or have == 0:
            try:
                self._fetch(info, headers, have, partial)
            except httpx.HTTPError as exc:
                raise UpstreamFailure("unreachable", f"{info.path}: {type(exc).__name__}: {exc}") from None
        try:
            with partial.open("rb") as f:
                info.verify_length_and_hashes(f)
        except tuf_errors.LengthOrHashMismatchError as exc:
            partial.unlink(missing_ok=True)
            raise RefusedError("hash_mismatch", f"{info.path}: {exc}") from None
        return partial

    def _fetch(self, info: TargetFile, headers: dict[str, str], have: int, partial: Path) -> None:
        with self.http.stream("GET", self.url(info.path), headers=headers) as response:
            if response.status_code not in (200, 206):
                raise UpstreamFailure("upstream_error", f"upstream answered {response.status_code} for {info.path}")
            mode = "ab" if response.status_code == 206 else "wb"
            written = have if mode == "ab" else 0
            with partial.open(mode) as out:
                for chunk in response.iter_bytes(CHUNK):
                    written += len(chunk)
                    if written > info.length:
                        break  # longer than signed: refused below without reading the rest
                    out.write(chunk)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


async def _aiter(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class Importer:
    """Records verified upstream files here through the catalog and the one ingest path (mirror, pull-through)."""

    def __init__(self, catalog: Catalog, ingest: Ingest, chunk_size: int) -> None:
        self.catalog = catalog
        self.ingest = ingest
        self.chunk_size = chunk_size

    async def find_by_name(self, name: TargetName) -> File | None:
        return await self.catalog.by_name(name.package, name.revision, name.filename)

    async def publish(self, file: File, channels: list[str], key_id: str) -> bool:
        """Published, in exactly ``channels`` (one transaction, subscribers told); True if it changed."""
        change = await self.catalog.set_state(file.id, FileState.published, key_id, channels)
        assert change is not None
        return change.changed or change.moved

    async def record(self, info: TargetFile, content: Content, md5: str, key_id: str) -> File | None:
        """Ingest verified upstream content under the upstream's name and publish it in the upstream's channels.
        None when this name was recorded here meanwhile (another request or process); the ingest's undo has
        removed what it stored. The MD5 is not signed upstream: it only feeds the store's receipt check."""
        name = split_target(info.path)
        declared = Declared(size=info.length, md5=md5, sha256=info.hashes["sha256"])
        fields = UploadFields(name.package, name.revision, name.filename, Visibility.public, declared)
        try:
            record = await self.ingest.ingest(fields, content, key_id, sha512=info.hashes.get("sha512"))
        except Conflict:
            return None
        await self.publish(record, target_channels(info), key_id)
        return record

    async def import_target(self, info: TargetFile, source: Path) -> File:
        """Store a downloaded, TUF-verified file (checked against the signed size and hashes again while it
        streams) and record it under the upstream's name, published in its channels."""
        md5 = await asyncio.to_thread(_md5_of, source)
        declared = Declared(size=info.length, md5=md5, sha256=info.hashes["sha256"])
        content = StreamContent(_aiter(_file_chunks(source)), declared, self.chunk_size, all_digests=True)
        try:
            record = await self.record(info, content, md5, IMPORT_KEY_ID)
        except DigestMismatchError as exc:
            raise RefusedError("hash_mismatch", f"{info.path}: the file changed after it was verified: {exc}") from None
        if record is None:
            raise RefusedError("conflict", f"{info.path}: a file with this name was recorded here meanwhile")
        return record


def _md5_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def target_channels(info: TargetFile) -> list[str]:
    channels = info.custom.get("channels", []) if isinstance(info.custom, dict) else []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        return []
    try:
        return parse_channels(",".join(channels))
    except InvalidInput:
        return []
