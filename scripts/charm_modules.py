"""Import a charm's modules as the charm imports them (its src/ and the shared library on the path), without
leaving them in sys.modules: both charms have modules named `models`, `workload`, `state` and `charm`, and the
local stack and the tests use both charms' in one process."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

CHARMS = Path(__file__).resolve().parents[1] / "charms"
COMMON = CHARMS / "common"  # the library both charms carry in lib/ (`updown_charms`)


def load(charm: str, names: tuple[str, ...]) -> dict[str, ModuleType]:
    """`names` of charms/<charm>/src, imported in that order; whatever those names were bound to before is
    put back afterwards."""
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    paths = [str(CHARMS / charm / "src"), str(COMMON)]
    sys.path[:0] = paths
    try:
        return {name: importlib.import_module(name) for name in names}
    finally:
        for path in paths:
            sys.path.remove(path)
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
