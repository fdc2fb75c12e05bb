"""``updown mirror``: the command line of ``upstream/mirror.py``, on the same runtime the service builds (without
its background work); loaded only when the command runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from updown_app.cli.settings import load_settings

if TYPE_CHECKING:  # the runtime is loaded when the command runs, not when ``updown`` starts
    from updown_app.settings import Settings
    from updown_app.upstream.mirror import Summary


def cmd_mirror(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    try:
        root = args.root_of_trust.read_bytes()
    except OSError as exc:
        sys.exit(f"updown: cannot read --root-of-trust: {exc.strerror}")
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


async def run(
    settings: Settings,
    upstream_url: str,
    root_of_trust: bytes,
    *,
    packages: list[str],
    channels: list[str],
    dry_run: bool,
    state_dir: Path | None,
    ca_bundle: Path | None,
) -> Summary:
    from updown_app.runtime import build_runtime, close_runtime
    from updown_app.upstream.importer import UpstreamIndex, state_dir_for
    from updown_app.upstream.mirror import mirror

    runtime = await build_runtime(settings, serving=False)
    upstream = UpstreamIndex(
        upstream_url,
        root_of_trust,
        state_dir or state_dir_for(settings.data_dir, upstream_url),
        ca_bundle=ca_bundle,
    )
    try:
        return await mirror(runtime.importer, upstream, packages=packages, channels=channels, dry_run=dry_run)
    finally:
        upstream.close()
        await close_runtime(runtime)


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
