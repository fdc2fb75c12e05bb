"""The client commands: ``upload``, ``publish``, ``unpublish``, ``info``, ``download``, signed with the key from
the environment (``UPDOWN_URL``, ``UPDOWN_KEY_ID``, and the secret from ``UPDOWN_KEY_FILE`` — a JSON object
{key_id: secret} — or ``UPDOWN_KEY``), never from arguments, which other users of the machine can see."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from updown_app.client import UpdownClient


def _client(args: argparse.Namespace) -> UpdownClient:
    url = args.url or os.environ.get("UPDOWN_URL")
    if not url:
        sys.exit("updown: set UPDOWN_URL (or --url) to the service's base URL")
    key_id = os.environ.get("UPDOWN_KEY_ID")
    secret: bytes | None = None
    if "UPDOWN_KEY" in os.environ:
        secret = os.environ["UPDOWN_KEY"].encode()
    elif "UPDOWN_KEY_FILE" in os.environ:
        try:
            keys = json.loads(Path(os.environ["UPDOWN_KEY_FILE"]).read_text())
        except ValueError:
            sys.exit("updown: UPDOWN_KEY_FILE is not a JSON object {key_id: secret}")
        if not isinstance(keys, dict):
            sys.exit("updown: UPDOWN_KEY_FILE is not a JSON object {key_id: secret}")
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


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def with_client(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", help="service base URL (default: UPDOWN_URL)")
        sp.add_argument("--cacert", help="CA bundle to verify the server (default: UPDOWN_CA_BUNDLE)")

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

    sp = sub.add_parser("download", help="download (resuming) and verify a file")
    sp.add_argument("file_url")
    sp.add_argument("-o", "--output")
    with_client(sp)
    sp.set_defaults(func=cmd_download)
