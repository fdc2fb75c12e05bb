"""The public host's 404 costs the same for a missing, an unpublished and a private file: no timing oracle.

Absolute times mean nothing on a busy machine, so the three kinds are requested interleaved in random order on
one keep-alive connection (whatever slows one slows the others) and their distributions are compared: the
medians within a small factor, and each pair's interquartile ranges overlapping.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

from tests.support.server import ServerProcess

ROUNDS = 300
WARMUP = 30


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(samples, n=4)
    return q1, q2, q3


def test_missing_unpublished_and_private_404s_cost_the_same(server: ServerProcess, tmp_path: Path) -> None:
    with server.client() as c:
        (tmp_path / "secret.bin").write_bytes(b"private bits")
        private = c.upload(tmp_path / "secret.bin", package="oracle", revision="1", visibility="private")
        c.publish(private["id"])
        (tmp_path / "draft.bin").write_bytes(b"not yet")
        c.upload(tmp_path / "draft.bin", package="oracle", revision="1")
    paths = {
        "missing": "/oracle/1/missing.bin",
        "unpublished": "/oracle/1/draft.bin",
        "private": "/oracle/1/secret.bin",
    }
    times: dict[str, list[float]] = {kind: [] for kind in paths}
    order = list(paths)
    with server.http(host="localhost") as http:
        for n in range(WARMUP + ROUNDS):
            random.shuffle(order)
            for kind in order:
                start = time.perf_counter()
                r = http.get(paths[kind])
                elapsed = time.perf_counter() - start
                assert r.status_code == 404 and r.json() == {"error": {"code": "not_found", "message": "no such file"}}
                if n >= WARMUP:
                    times[kind].append(elapsed)
    quartiles = {kind: _quartiles(samples) for kind, samples in times.items()}
    report = {kind: tuple(round(q * 1e3, 3) for q in qs) for kind, qs in quartiles.items()}  # ms, for the failure
    medians = [qs[1] for qs in quartiles.values()]
    assert max(medians) / min(medians) < 1.3, report
    for a in quartiles.values():
        for b in quartiles.values():
            assert a[0] <= b[2] and b[0] <= a[2], report
