"""Where the signed index is served, its online roles and whether one is configured: what the service and the CLI's
parsers need of the index without loading python-tuf (and with it cryptography, ~10 MB a process never gives back)."""

from __future__ import annotations

from updown_app.settings import IndexSettings

# Where the metadata is served (``http/handlers/index.py``); ``/-/`` cannot be a package name.
METADATA_PREFIX = "/-/tuf/metadata/"
TIMESTAMP_PATH = METADATA_PREFIX + "timestamp.json"
ONLINE_ROLES = ("targets", "snapshot", "timestamp")  # the roles whose keys the service holds and signs with


def configured(settings: IndexSettings) -> bool:
    return settings.root_dir is not None and settings.keys_file is not None
