"""The sweeper: removes what nothing records, so that the store holds exactly the objects the database knows.

Two kinds of leftovers, both older than a grace period (``sweep.grace``, since their last write):

- partial local writes (``objects/.tmp``) of a process killed mid-upload (``Storage.sweep_partials``);
- content objects (``sha256/...``) that no file records: an ingest killed between its put and its record, or
  whose undo could not reach the store. The ingest's own undo (services/ingest.py) handles every failure it
  lives to see; the sweeper is for those it does not.

Like distribution's upload purge and Launchpad's librarian GC it needs no lock and is safe on many units at once:
a candidate is looked at again right before its removal (still there, still not written within the grace period,
still unrecorded), removing an object twice is harmless, and only this unit's removals are counted. The grace
period covers an ingest between its put and its record; it must be longer than the longest upload (Swift dates
an object by the start of its PUT). What it cannot close: an ingest of the very bytes of an orphan older than
the grace period, whose put overwrites the orphan in the instant between the sweeper's last look and its delete;
the ingest's record then names a removed object (the download answers ``object_missing``; uploading the file
again stores it again).

Resumable uploads' parts belong to their sessions and are removed with them (``purge-uploads``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from updown_app import metrics
from updown_app.core.names import OBJECT_KEY_PREFIX, is_object_key
from updown_app.metadata.repository import Repository
from updown_app.storage.base import ObjectInfo, Storage

log = logging.getLogger("updown.sweep")

PAGE = 500


@dataclass
class SweepReport:
    objects: list[str] = field(default_factory=list)
    object_bytes: int = 0
    partials: int = 0
    partial_bytes: int = 0
    dry_run: bool = False

    def json(self) -> dict[str, object]:
        return {
            "removed_objects": len(self.objects),
            "removed_object_bytes": self.object_bytes,
            "removed_partials": self.partials,
            "removed_partial_bytes": self.partial_bytes,
            "object_keys": self.objects,
            "dry_run": self.dry_run,
        }


class Sweeper:
    def __init__(self, storage: Storage, repository: Repository, grace: float) -> None:
        self.storage = storage
        self.repository = repository
        self.grace = grace

    async def sweep(self, *, dry_run: bool = False) -> SweepReport:
        """One pass over the store; ``dry_run`` reports the orphan objects without removing anything."""
        cutoff = time.time() - self.grace
        report = SweepReport(dry_run=dry_run)
        if not dry_run:
            report.partials, report.partial_bytes = await self.storage.sweep_partials(cutoff)
            if report.partials:
                metrics.SWEPT.labels("partial").inc(report.partials)
                metrics.SWEPT_BYTES.labels("partial").inc(report.partial_bytes)
                log.info("removed partial writes", extra={"files": report.partials, "bytes": report.partial_bytes})
        page: list[ObjectInfo] = []
        async for info in self.storage.list(OBJECT_KEY_PREFIX):
            if is_object_key(info.key) and _older(info, cutoff):
                page.append(info)
                if len(page) >= PAGE:
                    await self._sweep_page(page, cutoff, report)
                    page = []
        await self._sweep_page(page, cutoff, report)
        return report

    async def _sweep_page(self, page: list[ObjectInfo], cutoff: float, report: SweepReport) -> None:
        recorded = await self.repository.recorded_objects([info.key for info in page])
        for info in page:
            if info.key in recorded:
                continue
            # Look again right before removing: another unit may have removed it, an ingest rewritten or recorded it.
            fresh = await self.storage.head(info.key)
            if fresh is None or not _older(fresh, cutoff) or await self.repository.object_in_use(info.key):
                continue
            if report.dry_run:
                report.objects.append(info.key)
                report.object_bytes += fresh.size
                continue
            if not await self.storage.delete(info.key):
                continue  # another unit's sweep was first
            report.objects.append(info.key)
            report.object_bytes += fresh.size
            metrics.SWEPT.labels("object").inc()
            metrics.SWEPT_BYTES.labels("object").inc(fresh.size)
            log.info("removed an object no file records", extra={"key": info.key, "bytes": fresh.size})


def _older(info: ObjectInfo, cutoff: float) -> bool:
    """Last written before ``cutoff``; an object whose store gives no date is never removed."""
    return info.modified is not None and info.modified <= cutoff
