"""The runtime a request is served with (built once by the app's lifespan)."""

from __future__ import annotations

from starlette.requests import Request

from updown_app.runtime import Runtime


def ctx(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
