"""The ``updown mirror`` command line (kept apart from mirror.py so that ``updown`` starts without loading it)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def cmd_mirror(args: argparse.Namespace) -> int:
    from updown_app.cli import _settings

    settings = _settings(args)
    try:
        root = args.root_of_trust.read_bytes()
    except OSError as exc:
        sys.exit(f"updown: cannot read --root-of-trust: {exc.strerror}")
    from updown_app.upstream.mirror import run

    summary = asyncio.run(
        run(
            settings,
            args.upstream,
            root,
            packages=args.package or [],
            channels=args.channel or [],
            dry_run=args.dry_run,
            state_dir=args.state_dir,
            ca_bundle=args.cacert,
        )
    )
    print(json.dumps(summary.json(), indent=2))
    return summary.exit_status


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("mirror", help="import an upstream's published files, verified against its signed index")
    sp.add_argument("--upstream", required=True, help="the upstream's base URL")
    sp.add_argument("--root-of-trust", type=Path, required=True, help="the upstream's root.json, trusted first")
    sp.add_argument("--package", action="append", help="only this package (repeatable)")
    sp.add_argument("--channel", action="append", help="only files in this channel (repeatable)")
    sp.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    sp.add_argument("--state-dir", type=Path, help="trusted metadata and partial downloads of this upstream")
    sp.add_argument("--cacert", type=Path, help="CA bundle for the upstream's certificate")
    sp.add_argument("--config", type=Path, help="TOML config file of this instance (also UPDOWN_CONFIG)")
    sp.set_defaults(func=cmd_mirror)
