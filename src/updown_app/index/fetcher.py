"""The network side of python-tuf's client over httpx: our CA bundle, timeouts, no proxy from the environment."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface

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


class HttpxFetcher(FetcherInterface):
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self.client.send(self.client.build_request("GET", url), stream=True)
        except httpx.TimeoutException as exc:
            raise exceptions.SlowRetrievalError from exc
        if response.status_code != 200:
            response.close()
            raise exceptions.DownloadHTTPError(f"HTTP {response.status_code} for {url}", response.status_code)
        return self._chunks(response)

    @staticmethod
    def _chunks(response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(CHUNK)
        except httpx.TimeoutException as exc:
            raise exceptions.SlowRetrievalError from exc
        finally:
            response.close()
