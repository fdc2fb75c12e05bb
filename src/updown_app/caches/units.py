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

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from updown_app.settings import CacheSettings, CacheUnitUrl

log = logging.getLogger("updown.cache_units")
RECHECK_INTERVAL = 1.0


class _UnitsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frontends: list[CacheUnitUrl] = []
    backends: dict[str, CacheUnitUrl] = {}


@dataclass
class CacheUnits:
    frontends: list[str] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)
    units_file: Path | None = None
    # Bumped whenever the lists change (the read cache rebuilds its hash ring then).
    generation: int = field(default=0, init=False)
    _checked_at: float = field(default=-RECHECK_INTERVAL, init=False)
    _stamp: tuple[int, int] | None = field(default=None, init=False)  # (mtime, size) of the file last read

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
                parsed = _UnitsFile.model_validate_json(self.units_file.read_bytes())
            except OSError as exc:  # tried again next time
                log.error("cannot read the cache units file", extra={"path": str(self.units_file), "error": str(exc)})
                return
            except ValidationError as exc:
                self._stamp = stamp  # said once: this content stays invalid until the file is rewritten
                log.error(
                    "cache units file is invalid; keeping the previous units",
                    extra={"path": str(self.units_file), "error": exc.errors()[0]["type"]},
                )
                return
            frontends, backends = parsed.frontends, parsed.backends
        self._stamp = stamp
        if (frontends, backends) != (self.frontends, self.backends):
            self.frontends, self.backends = frontends, backends
            self.generation += 1
            log.info("cache units changed", extra={"frontends": len(frontends), "backends": len(backends)})
