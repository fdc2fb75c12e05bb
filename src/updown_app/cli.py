"""The ``updown`` command: run the service, manage its database, and the signed client commands.

Client commands read their target and key from the environment (``UPDOWN_URL``, ``UPDOWN_KEY_ID``, and the
secret from ``UPDOWN_KEY_FILE`` — a JSON object {key_id: secret} — or ``UPDOWN_KEY``), never from arguments,
which other users of the machine can see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from updown_app.client import UpdownClient, UpdownError


def _settings(args: argparse.Namespace) -> Any:
    from updown_app.settings import Settings

    if args.config is not None:
        os.environ["UPDOWN_CONFIG"] = str(args.config)  # worker processes re-read it
    try:
        return Settings.load(args.config)
    except (ValidationError, ValueError) as exc:
        sys.exit(f"updown: invalid configuration: {exc}")


def cmd_serve(args: argparse.Namespace) -> int:
    from updown_app.server import serve

    serve(_settings(args))
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from updown_app.metadata.db import create_engine, current_revision, migrate

    settings = _settings(args)

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
    from updown_app.storage import create_storage
    from updown_app.upload_purge import purge_expired

    settings = _settings(args)

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


def _client(args: argparse.Namespace) -> UpdownClient:
    url = args.url or os.environ.get("UPDOWN_URL")
    if not url:
        sys.exit("updown: set UPDOWN_URL (or --url) to the service's base URL")
    key_id = os.environ.get("UPDOWN_KEY_ID")
    secret: bytes | None = None
    if "UPDOWN_KEY" in os.environ:
        secret = os.environ["UPDOWN_KEY"].encode()
    elif "UPDOWN_KEY_FILE" in os.environ:
        keys = json.loads(Path(os.environ["UPDOWN_KEY_FILE"]).read_text())
        if key_id is None and len(keys) == 1:
            key_id = next(iter(keys))
        if key_id not in keys:
            sys.exit("updown: UPDOWN_KEY_ID is not in UPDOWN_KEY_FILE")
        secret = str(keys[key_id]).encode()
    verify: str | bool = os.environ.get("UPDOWN_CA_BUNDLE") or True
    if args.cacert:
        verify = args.cacert
    return UpdownClient(url, key_id=key_id, secret=secret, verify=verify)


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def cmd_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(
            client.upload(
                Path(args.file),
                package=args.package,
                revision=args.revision,
                filename=args.filename,
                visibility="private" if args.private else "public",
            )
        )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    channels = None if args.channel is None else [c for c in args.channel if c]
    with _client(args) as client:
        _print(client.publish(args.id, channels))
    return 0


def cmd_unpublish(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.unpublish(args.id))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print(client.info(args.id))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    args.url = args.url or args.file_url
    dest = Path(args.output or args.file_url.rstrip("/").rsplit("/", 1)[-1])
    with _client(args) as client:
        client.download(args.file_url, dest)
    print(str(dest))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="updown", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, help="TOML config file (also UPDOWN_CONFIG)")

    def with_client(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", help="service base URL (default: UPDOWN_URL)")
        sp.add_argument("--cacert", help="CA bundle to verify the server (default: UPDOWN_CA_BUNDLE)")

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

    sp = sub.add_parser("upload", help="upload a file (state: unpublished)")
    sp.add_argument("file")
    sp.add_argument("--package", required=True)
    sp.add_argument("--revision", required=True)
    sp.add_argument("--filename", help="name to publish under (default: the file's name)")
    sp.add_argument("--private", action="store_true", help="private file (default: public)")
    with_client(sp)
    sp.set_defaults(func=cmd_upload)

    for name, func, text in (
        ("publish", cmd_publish, "publish a file by id"),
        ("unpublish", cmd_unpublish, "unpublish a file by id"),
        ("info", cmd_info, "show a file's record and history"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("id")
        if name == "publish":
            sp.add_argument(
                "--channel",
                action="append",
                help="channel to publish in (repeatable); the file is then in exactly these ('' for none)",
            )
        with_client(sp)
        sp.set_defaults(func=func)

    from updown_app.index.keys_cli import add_parser as add_keys_parser

    add_keys_parser(sub)
    from updown_app.mirror_cli import add_parser as add_mirror_parser

    add_mirror_parser(sub)

    sp = sub.add_parser("download", help="download (resuming) and verify a file")
    sp.add_argument("file_url")
    sp.add_argument("-o", "--output")
    with_client(sp)
    sp.set_defaults(func=cmd_download)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UpdownError as exc:
        print(f"updown: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
