"""The charm's actions, without Juju: each takes what the charm read (params, the unit's AppState, the rollout's
peer data) and returns the action's results, or raises ActionFailed with the message the operator sees. The
charm (charm.py) checks leadership, reads and writes the databags and calls these."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import rollout
import workload
from models import AppState, PauseAfter
from rollout import AppRollout, UnitRollout
from updown_charms.status import StateError

Results = dict[str, str]


class ActionFailed(Exception):
    """The action did nothing; the message says why (event.fail)."""


def configured(build: Callable[[], AppState]) -> AppState:
    try:
        return build()
    except StateError as problem:
        raise ActionFailed(f"the unit is not configured: {problem}") from problem


def unpublish(params: Mapping[str, Any], build: Callable[[], AppState], layout: workload.Layout) -> Results:
    """Unpublish by id, or by the path the file is served at (looked up with the release's own command)."""
    file_id = str(params.get("id", "")).strip()
    name = str(params.get("name", "")).strip()
    if bool(file_id) == bool(name):
        raise ActionFailed("give either id or name (/<package>/<revision>/<filename>)")
    st = configured(build)
    try:
        if name:
            found = workload.find_published(layout, name)
            if found is None:
                raise ActionFailed(f"no published file at {name}")
            file_id = found
        out = workload.unpublish(st, layout, file_id)
    except ValueError as exc:
        raise ActionFailed(str(exc)) from exc
    except subprocess.CalledProcessError as exc:
        raise ActionFailed(f"unpublish failed: {workload.scrubbed_stderr(exc, st)}") from exc
    return {"result": out.strip(), "id": file_id}


def purge_uploads(layout: workload.Layout) -> Results:
    try:
        out = workload.purge_uploads(layout)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        raise ActionFailed(f"purge-uploads failed: {getattr(exc, 'stderr', '') or exc}"[-500:]) from exc
    return {"result": out.strip()}


def resume_refresh(app: AppRollout, units: Sequence[UnitRollout], pause: PauseAfter) -> tuple[AppRollout, Results]:
    if not rollout.paused(app, units):
        raise ActionFailed("no refresh is waiting to be resumed")
    return rollout.resume(app, pause, units), {"result": f"resumed the refresh to {app.target}"}


def rollback(app: AppRollout) -> tuple[AppRollout, Results]:
    try:
        back = rollout.rollback(app)
    except ValueError as exc:
        raise ActionFailed(str(exc)) from exc
    return back, {"result": f"rolling back from {app.target} to {back.target}"}


def show_config(build: Callable[[], AppState], layout: workload.Layout) -> Results:
    st = configured(build)
    return {
        "config": json.dumps(workload.shown_settings(st, layout), indent=2, sort_keys=True),
        "hmac-key-ids": ",".join(sorted(st.secrets.hmac_keys)),
    }
