"""Reading the unit databags of the remote units on a charm's relations."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

import ops
import pydantic

from updown_charms.interface import Databag
from updown_charms.status import StateError

logger = logging.getLogger(__name__)

DatabagT = TypeVar("DatabagT", bound=Databag)


def published(relations: Iterable[ops.Relation], model: type[DatabagT]) -> Iterator[tuple[ops.Unit, DatabagT]]:
    """Each remote unit of `relations` with its databag as `model`; a unit that has not published (valid) data
    yet is skipped: it is read again on its next relation-changed."""
    for relation in relations:
        for unit in relation.units:
            try:
                yield unit, model.load(relation.data[unit])
            except pydantic.ValidationError:
                logger.info("%s has not published its %s yet", unit.name, model.__name__)


def bind_address(charm: ops.CharmBase, endpoint: str) -> str:
    """This unit's address on `endpoint`'s binding (what it publishes to the other side)."""
    binding = charm.model.get_binding(endpoint)
    address = binding.network.bind_address if binding else None
    if address is None:
        raise StateError(ops.WaitingStatus("waiting for a network address"))
    return str(address)
