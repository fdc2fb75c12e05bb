"""One JSON call to a deployer's service (SSO introspection, the store's access check), failing closed.

Every way the call can go wrong (timeout, connection error, non-200, a body that is not a JSON object) becomes the
caller's "unavailable" exception, which the private host answers with 503: no answer is never an "allowed".
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


async def post_json(
    http: httpx.AsyncClient, url: str, deadline: float, unavailable: type[Exception], what: str, **kwargs: Any
) -> dict[str, Any]:
    try:
        async with asyncio.timeout(deadline):
            response = await http.post(url, **kwargs)
    except TimeoutError:
        raise unavailable(f"{what} timed out") from None
    except httpx.HTTPError as exc:
        raise unavailable(f"{what} failed: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise unavailable(f"{what} answered HTTP {response.status_code}")
    try:
        answer = response.json()
    except ValueError:
        raise unavailable(f"{what} answered malformed JSON") from None
    if not isinstance(answer, dict):
        raise unavailable(f"{what} answer is not a JSON object")
    return answer
