"""``updown purge-uploads``: remove expired resumable upload sessions and every part they left in storage.

Safe on several units at once: a session is removed only by whoever takes its lease (a conditional update in the
database), and never while a PATCH holds it. The service runs the same purge every ``uploads.purge_interval``.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from updown_app import metrics
from updown_app.metadata.upload_sessions import UploadSessions
from updown_app.services.uploads import discard
from updown_app.storage.base import Storage

log = logging.getLogger("updown.purge")


@dataclass
class PurgeReport:
    sessions: list[str] = field(default_factory=list)
    bytes: int = 0

    def json(self) -> dict[str, object]:
        return {"purged_sessions": len(self.sessions), "purged_bytes": self.bytes, "session_ids": self.sessions}


async def purge_expired(storage: Storage, sessions: UploadSessions, lease: float) -> PurgeReport:
    report = PurgeReport()
    while True:
        batch = [s for s in await sessions.expired() if s.id not in report.sessions]
        if not batch:
            break
        for session in batch:
            report.sessions.append(session.id)
            if not await sessions.claim_for_removal(session.id, secrets.token_hex(16), lease, expired_only=True):
                continue  # another unit is on it
            if session.state == "open":
                removed = await discard(storage, sessions, session.id)
            else:  # a finished upload's parts were removed, or became its object's segments, when it finished
                await sessions.remove(session.id)
                removed = 0
            report.bytes += removed
            metrics.UPLOAD_PURGED_BYTES.inc(removed)
            metrics.UPLOAD_SESSIONS_PURGED.inc()
            log.info("purged expired upload session", extra={"session": session.id, "bytes": removed})
    metrics.UPLOAD_SESSIONS_LIVE.set(await sessions.count_open())
    return report
