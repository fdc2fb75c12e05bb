"""The benchmark scripts start as `benchmarks/run.sh` and `cache_bench.sh` start them: the venv's python, no
PYTHONPATH, from the repository. Each finds its own imports (the app, the cache charm's workload and the charms'
shared library) and answers --help; a broken import would otherwise show only in a benchmark run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# upload_check.py is a filter of updown_upload.py's output (argv: size and digest), not a command with options
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "upload_check.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_starts(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower(), done.stdout[:500]
