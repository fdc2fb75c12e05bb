"""An index key set made with the real ``updown keys`` command, and the env that makes a server use it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class IndexKeys:
    root_key: Path
    online_keys: Path
    root_dir: Path

    def env(self, **over: str) -> dict[str, str]:
        return {
            "UPDOWN_INDEX__ROOT_DIR": str(self.root_dir),
            "UPDOWN_INDEX__KEYS_FILE": str(self.online_keys),
            **over,
        }

    def keys(self, *args: str) -> str:
        cmd = [sys.executable, "-m", "updown_app", "keys", *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def rotate(self, *args: str) -> str:
        common = ["--root-key", str(self.root_key), "--online-keys", str(self.online_keys)]
        return self.keys("rotate", *common, "--root-dir", str(self.root_dir), *args)

    @property
    def first_root(self) -> Path:
        return self.root_dir / "1.root.json"


def make_index_keys(tmp: Path) -> IndexKeys:
    keys = IndexKeys(tmp / "root-key.pem", tmp / "online-keys.json", tmp / "roots")
    keys.keys(
        "init",
        "--root-key",
        str(keys.root_key),
        "--online-keys",
        str(keys.online_keys),
        "--root-dir",
        str(keys.root_dir),
    )
    return keys
