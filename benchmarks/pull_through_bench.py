"""Latency of a first-time pull-through download: time to the first byte and to the last one, for a file the
local instance does not have yet. Two real instances on loopback (TLS), both on local storage and SQLite; the
upstream serves its signed index.

    .venv/bin/python benchmarks/pull_through_bench.py [--sizes 1,100] [--runs 5]

Prints one line per size (MiB): median and min/max of time to first byte and total time, over fresh pulls (each
run publishes a new file upstream). Run it on two revisions to compare answering strategies.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.support.server import make_server  # noqa: E402
from tests.support.tuf_index import make_index_keys  # noqa: E402

MiB = 1024 * 1024


def first_pull(http: httpx.Client, path: str) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = None
    size = 0
    with http.stream("GET", path) as r:
        assert r.status_code == 200, r.status_code
        for chunk in r.iter_bytes(MiB):
            if first is None:
                first = time.perf_counter() - start
            size += len(chunk)
    return first or 0.0, time.perf_counter() - start, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,100", help="MiB, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        keys = make_index_keys(tmp / "keys")
        big = {"UPDOWN_MAX_UPLOAD_SIZE": str((max(sizes) + 1) * MiB)}
        upstream = make_server(tmp / "upstream", extra_env={**keys.env(), **big}).start()
        env = {
            "UPDOWN_UPSTREAM__URL": upstream.base_url,
            "UPDOWN_UPSTREAM__ROOT_FILE": str(keys.first_root),
            "UPDOWN_UPSTREAM__CA_BUNDLE": str(upstream.cert),
            "UPDOWN_UPSTREAM__REFRESH_INTERVAL": "0",
            **big,
        }
        local = make_server(tmp / "local", extra_env=env).start()
        try:
            for size in sizes:
                data = os.urandom(size * MiB)
                ttfb, total = [], []
                for run in range(args.runs):
                    src = tmp / "file.bin"
                    src.write_bytes(data[:-8] + os.urandom(8))  # a new file each run: a first-time pull
                    with upstream.client() as c:
                        record = c.upload(src, package=f"bench{size}", revision=str(run), filename="f.bin")
                        c.publish(record["id"])
                    with local.http() as http:
                        first, last, got = first_pull(http, f"/bench{size}/{run}/f.bin")
                    assert got == size * MiB
                    ttfb.append(first)
                    total.append(last)
                print(
                    f"{size} MiB: first byte median {statistics.median(ttfb) * 1000:.0f} ms "
                    f"({min(ttfb) * 1000:.0f}-{max(ttfb) * 1000:.0f}), total median "
                    f"{statistics.median(total) * 1000:.0f} ms ({min(total) * 1000:.0f}-{max(total) * 1000:.0f})",
                    flush=True,
                )
        finally:
            local.stop()
            upstream.stop()


if __name__ == "__main__":
    main()
