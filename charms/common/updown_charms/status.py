"""How a charm's state builder says what is missing: a StateError carries the exact status the unit shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import ops
import pydantic

ConfigT = TypeVar("ConfigT", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class StateError(Exception):
    status: ops.StatusBase

    def __str__(self) -> str:
        return self.status.message


def problems(exc: pydantic.ValidationError) -> str:
    """`option: problem; ...` (options spelled as in config, dashes), or just the problem when it spans options
    (a model validator)."""
    return "; ".join(_problem(err["loc"], err["msg"]) for err in exc.errors())


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    msg = msg.removeprefix("Value error, ")
    option = ".".join(str(p) for p in loc).replace("_", "-")
    return f"{option}: {msg}" if option else msg


def load_config(charm: ops.CharmBase, model: type[ConfigT]) -> ConfigT:
    """The charm's config as `model`; invalid config blocks the unit, naming every bad option."""
    try:
        return charm.load_config(model)
    except pydantic.ValidationError as exc:
        raise StateError(ops.BlockedStatus(f"invalid config: {problems(exc)}")) from exc
