"""``updown mirror``: import an upstream updown's published files into this instance, verified with TUF.

    updown mirror --upstream https://updown.example --root-of-trust root.json [--package P] [--channel C]
                  [--dry-run] [--config updown.toml]

The upstream's metadata is fetched and verified by python-tuf's ``ngclient.Updater`` from the trusted root on:
bad signatures, expired metadata and rolled-back versions are refused and nothing is imported. Each selected
target missing here is downloaded (resuming an interrupted download), checked against its signed length and
hashes, stored and recorded through the upload's verifying code, and published under the same name in the same
channels. A target whose bytes do not match is refused; the others are imported. Files already here are only
brought to the upstream's channels, unless not published here by a local decision (skipped); files this command
imported that upstream no longer publishes are unpublished. Idempotent and incremental; the trusted metadata lives
in ``<data_dir>/upstreams/<host>``.

Prints a JSON summary. Exit status: 0 everything selected is in sync; 1 some targets were refused or failed
(the rest is imported); 2 the upstream's metadata was refused or unreachable (nothing changed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from updown_app.core.errors import StoreUnavailable
from updown_app.metadata.models import File, FileState, Visibility
from updown_app.services.catalog import Catalog
from updown_app.storage.base import StorageError
from updown_app.upstream.importer import (
    IMPORT_KEY_ID,
    Importer,
    RefusedError,
    UpstreamFailure,
    UpstreamIndex,
    refusal_reason,
    split_target,
    target_channels,
)

log = logging.getLogger("updown.mirror")

EXIT_OK, EXIT_PARTIAL, EXIT_REFUSED = 0, 1, 2


@dataclass
class Summary:
    upstream: str
    dry_run: bool
    selected: int = 0
    imported: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unpublished: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    error: dict[str, str] | None = None

    @property
    def exit_status(self) -> int:
        if self.error is not None:
            return EXIT_REFUSED
        return EXIT_PARTIAL if self.refused or self.failed else EXIT_OK

    def json(self) -> dict[str, Any]:
        return {
            "upstream": self.upstream,
            "dry_run": self.dry_run,
            "selected": self.selected,
            "imported": self.imported,
            "updated": self.updated,
            "unpublished": self.unpublished,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "refused": self.refused,
            "failed": self.failed,
            "error": self.error,
            "exit_status": self.exit_status,
        }


def selected(custom: Any, packages: list[str], channels: list[str]) -> bool:
    custom = custom if isinstance(custom, dict) else {}
    if packages and custom.get("package") not in packages:
        return False
    return not channels or bool(set(channels) & set(custom.get("channels") or []))


async def mirror(
    importer: Importer,
    upstream: UpstreamIndex,
    *,
    packages: list[str] | None = None,
    channels: list[str] | None = None,
    dry_run: bool = False,
) -> Summary:
    packages, channels = packages or [], channels or []
    summary = Summary(upstream.base_url, dry_run)
    try:
        upstream.refresh()
    except Exception as exc:
        summary.error = {"reason": refusal_reason(exc), "message": f"{type(exc).__name__}: {exc}"}
        log.error("upstream metadata refused: %s", summary.error["reason"], extra={"reason": summary.error["reason"]})
        return summary
    every = upstream.targets()
    targets = {p: t for p, t in every.items() if selected(t.custom, packages, channels)}
    summary.selected = len(targets)
    catalog = importer.catalog
    for path, info in sorted(targets.items()):
        try:
            name = split_target(path)
            local = await importer.find_by_name(name)
            if local is not None:
                if local.sha256 != info.hashes.get("sha256") or local.visibility != Visibility.public.value:
                    raise RefusedError("conflict", f"{path}: a different file has this name here")
                if local.state != FileState.published.value and not await _unpublished_by_mirror(catalog, local):
                    # Uploaded here and not published, or unpublished by the local operator: a local decision.
                    summary.skipped.append(
                        {"path": path, "reason": "unpublished_here", "message": f"{path}: not published here"}
                    )
                    continue
                wanted = target_channels(info)
                if local.state == FileState.published.value and await catalog.channels_of(local.id) == wanted:
                    summary.unchanged += 1
                elif dry_run:
                    summary.updated.append(path)
                else:
                    await importer.publish(local, wanted, IMPORT_KEY_ID)
                    summary.updated.append(path)
                continue
            if dry_run:
                summary.imported.append(path)
                continue
            source = upstream.download(info)
            await importer.import_target(info, source)
            source.unlink(missing_ok=True)
            summary.imported.append(path)
        except RefusedError as exc:
            summary.refused.append({"path": path, "reason": exc.reason, "message": str(exc)})
            log.error("target refused: %s: %s", path, exc.reason, extra={"path": path, "reason": exc.reason})
        except (UpstreamFailure, StorageError, StoreUnavailable) as exc:  # expected: one line, the summary the rest
            reason = exc.reason if isinstance(exc, UpstreamFailure) else "storage"
            summary.failed.append({"path": path, "reason": reason, "message": str(exc)[:300]})
            log.error("target failed: %s: %s", path, reason, extra={"path": path, "reason": reason})
        except Exception as exc:  # database, a bug: this target failed, the others go on
            summary.failed.append({"path": path, "reason": type(exc).__name__, "message": str(exc)[:300]})
            log.exception("target failed", extra={"path": path})
    await _unpublish_gone(catalog, set(every), packages, channels, summary)
    return summary


async def _unpublished_by_mirror(catalog: Catalog, file: File) -> bool:
    """Whether the file's last state change was this command's own unpublish (upstream had dropped it)."""
    events = [e for e in await catalog.events(file.id) if e.action in ("publish", "unpublish")]
    return bool(events) and events[-1].action == "unpublish" and events[-1].key_id == IMPORT_KEY_ID


async def _unpublish_gone(
    catalog: Catalog, upstream_paths: set[str], packages: list[str], channels: list[str], summary: Summary
) -> None:
    """Files this command imported that upstream no longer publishes: unpublished, like upstream did."""
    if channels:  # with a channel filter, absence from the selection says nothing
        return
    for file in await catalog.published_by(IMPORT_KEY_ID, packages):
        path = f"{file.package}/{file.revision}/{file.filename}"
        if path in upstream_paths:
            continue
        summary.unpublished.append(path)
        if summary.dry_run:
            continue
        await catalog.set_state(file.id, FileState.unpublished, IMPORT_KEY_ID)
