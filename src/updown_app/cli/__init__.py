"""The ``updown`` command: run the service, manage its database, and the signed client commands.

A package of subcommands on one settings loader (``cli/settings.py``): ``admin.py`` (serve, db upgrade,
purge-uploads, find-published), ``files.py`` (the signed client commands), ``keys.py``, ``mirror.py``. Each module
adds its own parsers and imports what its commands need when they run, so ``updown`` starts quickly.
"""

from __future__ import annotations

import argparse
import sys

from updown_app.cli import admin, files, keys, mirror
from updown_app.cli.errors import describe


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="updown", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)
    admin.add_parsers(sub)
    files.add_parsers(sub)
    keys.add_parser(sub)
    mirror.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (Exception, KeyboardInterrupt) as exc:
        described = describe(exc)
        if described is None:
            raise
        line, status = described
        print(f"updown: {line}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
