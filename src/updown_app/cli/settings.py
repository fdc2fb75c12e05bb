"""The one settings loader of every command that runs the service's code (serve, db, purge-uploads, mirror,
find-published): ``--config`` or ``UPDOWN_CONFIG``, over the environment, over the defaults."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded by the commands that need it, not by every ``updown`` start
    from updown_app.settings import Settings


def load_settings(args: argparse.Namespace) -> Settings:
    from pydantic import ValidationError

    from updown_app.settings import Settings

    if args.config is not None:
        os.environ["UPDOWN_CONFIG"] = str(args.config)  # worker processes re-read it
    try:
        return Settings.load(args.config)
    except (ValidationError, ValueError) as exc:
        sys.exit(f"updown: invalid configuration: {exc}")
