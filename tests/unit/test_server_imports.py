"""What a plain `updown serve` process loads: with the local store, no signed index, no JWT SSO and the migrations
run by its child (`updown db upgrade`), none of the heavy libraries that only other setups need. Each stays in the
process for its whole life (python-tuf with cryptography ~10 MB, alembic with mako ~10 MB, botocore ~20 MB), and
the server's memory is what 1,000 slow downloads are measured against (benchmarks/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "alembic",
    "mako",
    "tuf",
    "securesystemslib",
    "cryptography",
    "jwt",
    "botocore",
    "aiobotocore",
    "keystoneauth1",
)

PROGRAM = f"""
import asyncio, json, sys
from updown_app.http.server import serve  # noqa: F401 - the module `updown serve` runs
from updown_app.http.app import create_app
from updown_app.runtime import build_runtime
from updown_app.settings import Settings

settings = Settings.load(None)
asyncio.run(build_runtime(settings))
create_app(settings)
print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
"""


def test_a_plain_server_loads_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("UPDOWN_")},
        "UPDOWN_DATA_DIR": str(tmp_path),
        "UPDOWN_AUTO_MIGRATE": "false",  # `updown serve` migrates in a child process
        "UPDOWN_HMAC_KEYS": json.dumps({"store": "k" * 40}),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []
