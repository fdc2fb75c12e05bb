"""The HTTP client of what a mirror or a pull-through fetches from an upstream: our CA bundle, timeouts, no proxy
from the environment. (python-tuf's fetcher over it is ``fetcher.py``, loaded only where an index is read.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx

CHUNK = 1024 * 1024


def http_client(ca_bundle: Path | str | None = None, timeout: float = 30.0) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(ca_bundle))
    return httpx.Client(
        verify=verify,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        headers={"user-agent": "updown-mirror"},
        trust_env=False,
    )
