"""Writing a unit's rendered files, and relocating where they live (the local stack and the tests)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

LayoutT = TypeVar("LayoutT")


def relocated(layout: LayoutT, root: Path) -> LayoutT:
    """A copy of a frozen dataclass of absolute paths with every path moved under `root`."""
    fields = {f.name: root / str(getattr(layout, f.name)).lstrip("/") for f in dataclasses.fields(layout)}  # type: ignore[arg-type]
    replaced: Any = dataclasses.replace(layout, **fields)  # type: ignore[type-var]
    return replaced  # type: ignore[no-any-return]


def write_files(
    files: Mapping[Path, str],
    private: frozenset[Path] = frozenset(),
    *,
    private_mode: int = 0o600,
    group: str | None = None,
) -> set[Path]:
    """Atomically write the files whose content changed (rename over the old file). `private` ones (they hold
    secrets or keys) get `private_mode` and, if given, `group`; the rest 0644. Returns the changed paths."""
    changed = set()
    for path, content in files.items():
        if path.exists() and path.read_text() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=private_mode if path in private else 0o644)
        if path in private and group is not None:
            shutil.chown(tmp, group=group)
        tmp.write_text(content)
        tmp.replace(path)
        changed.add(path)
    return changed
