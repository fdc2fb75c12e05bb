"""Commands that run the service's own code on this machine: ``serve``, ``db upgrade``, ``purge-uploads``,
``sweep`` and ``find-published`` (the id of the published file at a download path, for operators and the charm's
unpublish-by-name action). Heavy modules are imported when a command runs, so ``updown`` starts quickly."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from updown_app.cli.settings import load_settings


def cmd_serve(args: argparse.Namespace) -> int:
    from updown_app.http.server import serve

    serve(load_settings(args))
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from updown_app.metadata.db import create_engine, current_revision, migrate

    settings = load_settings(args)

    async def run() -> str | None:
        engine = create_engine(settings.resolved_database_url, statement_timeout=None)  # a migration may be long
        try:
            await migrate(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    print(json.dumps({"revision": asyncio.run(run())}))
    return 0


def cmd_purge_uploads(args: argparse.Namespace) -> int:
    from updown_app.metadata.db import create_engine, session_factory
    from updown_app.metadata.upload_sessions import UploadSessions
    from updown_app.services.upload_purge import purge_expired
    from updown_app.storage import create_storage

    settings = load_settings(args)

    async def run() -> dict[str, object]:
        engine = create_engine(settings.resolved_database_url)
        storage = create_storage(settings)
        try:
            sessions = UploadSessions(session_factory(engine))
            return (await purge_expired(storage, sessions, settings.uploads.lease)).json()
        finally:
            await storage.close()
            await engine.dispose()

    print(json.dumps(asyncio.run(run())))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Prints what it removed (or, with --dry-run, would remove) as JSON."""
    from updown_app.metadata.db import create_engine, session_factory
    from updown_app.metadata.repository import Repository
    from updown_app.services.sweeper import Sweeper
    from updown_app.storage import create_storage

    settings = load_settings(args)
    grace = settings.sweep.grace if args.grace is None else args.grace

    async def run() -> dict[str, object]:
        engine = create_engine(settings.resolved_database_url)
        storage = create_storage(settings)
        try:
            sweeper = Sweeper(storage, Repository(session_factory(engine)), grace)
            return (await sweeper.sweep(dry_run=args.dry_run)).json()
        finally:
            await storage.close()
            await engine.dispose()

    print(json.dumps(asyncio.run(run())))
    return 0


def cmd_find_published(args: argparse.Namespace) -> int:
    """Prints ``{"id": <id or null>}``: the published file served at /<package>/<revision>/<filename>."""
    from updown_app.metadata.db import create_engine, session_factory
    from updown_app.metadata.repository import Repository

    parts = args.path.strip().strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        sys.exit("updown: the path must be /<package>/<revision>/<filename>")
    settings = load_settings(args)

    async def run() -> str | None:
        engine = create_engine(settings.resolved_database_url)
        try:
            found = await Repository(session_factory(engine)).published(*parts)
            return found.id if found else None
        finally:
            await engine.dispose()

    print(json.dumps({"id": asyncio.run(run())}))
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, help="TOML config file (also UPDOWN_CONFIG)")

    sp = sub.add_parser("serve", help="run the service")
    with_config(sp)
    sp.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database administration")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    sp = dbsub.add_parser("upgrade", help="apply Alembic migrations")
    with_config(sp)
    sp.set_defaults(func=cmd_db_upgrade)

    sp = sub.add_parser("purge-uploads", help="remove expired resumable upload sessions and their parts")
    with_config(sp)
    sp.set_defaults(func=cmd_purge_uploads)

    sp = sub.add_parser("sweep", help="remove objects no file records and partial writes older than the grace period")
    sp.add_argument("--grace", type=float, help="seconds since a leftover's last write (default: sweep.grace)")
    sp.add_argument("--dry-run", action="store_true", help="list the orphan objects, remove nothing")
    with_config(sp)
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("find-published", help="the id of the published file at /<package>/<revision>/<filename>")
    sp.add_argument("path")
    with_config(sp)
    sp.set_defaults(func=cmd_find_published)
