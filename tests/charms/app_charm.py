"""The updown-app charm's modules, imported as the charm imports them (charms/updown-app/src on sys.path) but
kept out of sys.modules afterwards: the cache charm's tests import their own `charm`, `state`, `models`,
and `workload` by the same names (tests/charms/conftest.py). The library both charms carry (charms/common,
`updown_charms`) is one and the same for both."""

from __future__ import annotations

from typing import Any

import yaml
from ops import testing
from scripts import charm_modules

CHARM_DIR = charm_modules.CHARMS / "updown-app"
_modules = charm_modules.load(
    "updown-app", ("models", "workload", "rollout", "statuses", "s3_integrator", "state", "actions", "deploy", "charm")
)
models = _modules["models"]
workload = _modules["workload"]
rollout = _modules["rollout"]
state = _modules["state"]
charm = _modules["charm"]


def context(**kwargs: Any) -> testing.Context[Any]:
    """An ops.testing Context for the charm, its metadata read from charmcraft.yaml (Scenario's autoload would
    look the charm's module up in sys.modules, where `charm` may be the cache charm's)."""
    spec = yaml.safe_load((CHARM_DIR / "charmcraft.yaml").read_text())
    meta = {k: v for k, v in spec.items() if k not in ("config", "actions", "parts", "platforms", "charm-libs")}
    return testing.Context(
        charm.UpdownAppCharm,
        meta=meta,
        config=spec["config"],
        actions=spec["actions"],
        charm_root=CHARM_DIR,
        **kwargs,
    )
