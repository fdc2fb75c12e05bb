"""The cache units the app talks to: frontend units (purged when a URL must stop being served) and backend units
(read caches of the object store).

They come from the settings (``caches.frontends``, ``caches.backends``) or from ``caches.units_file``: a JSON file
``{"frontends": ["http://address:port", ...], "backends": {"unit name": "http://address:port", ...}}`` that the
updown-app charm rewrites whenever cache units join or leave. The file is looked at again at most once a second
and re-read when it changed, so scaling the cache tier takes effect at once, without restarting the app: a new
frontend unit is purged from its first moment, a departed one is no longer waited for. A file that can't be read
or parsed keeps the last good lists in use (and says so in the log).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from updown_app.settings import CacheSettings

log = logging.getLogger("updown.cache_units")
RECHECK_INTERVAL = 1.0


class _UnitsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frontends: list[str] = []
    backends: dict[str, str] = {}


@dataclass
class CacheUnits:
    frontends: list[str] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)
    units_file: Path | None = None
    generation: int = 0  # bumped whenever the lists change (the read cache rebuilds its hash ring then)
    _checked_at: float = -RECHECK_INTERVAL
    _stamp: tuple[int, int] | None = None

    @classmethod
    def from_settings(cls, settings: CacheSettings) -> CacheUnits:
        units = cls(list(settings.frontends), dict(settings.backends), settings.units_file)
        units.refresh()
        return units

    @property
    def dynamic(self) -> bool:
        return self.units_file is not None

    def current_frontends(self) -> list[str]:
        self.refresh()
        return self.frontends

    def current_backends(self) -> dict[str, str]:
        self.refresh()
        return self.backends

    def refresh(self, force: bool = False) -> None:
        if self.units_file is None:
            return
        now = time.monotonic()
        if not force and now - self._checked_at < RECHECK_INTERVAL:
            return
        self._checked_at = now
        try:
            stat = self.units_file.stat()
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            log.error("cannot read the cache units file", extra={"path": str(self.units_file), "error": str(exc)})
            return
        else:
            stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        if stamp is None:  # not written yet (no cache unit related): no units
            frontends, backends = [], {}
        else:
            try:
                parsed = _UnitsFile.model_validate(json.loads(self.units_file.read_text()))
                checked = CacheSettings(frontends=parsed.frontends, backends=parsed.backends)  # the same URL checks
            except (OSError, ValueError, ValidationError) as exc:
                log.error(
                    "cache units file is invalid; keeping the previous units",
                    extra={"path": str(self.units_file), "error": type(exc).__name__},
                )
                return
            frontends, backends = checked.frontends, checked.backends
        self._stamp = stamp
        if (frontends, backends) != (self.frontends, self.backends):
            self.frontends, self.backends = frontends, backends
            self.generation += 1
            log.info("cache units changed", extra={"frontends": len(frontends), "backends": len(backends)})
