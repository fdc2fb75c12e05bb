"""Download read sizing: slow clients hold little memory, fast ones reach full-size reads quickly."""

from __future__ import annotations

from updown_app.http.wire.streaming import MIN_READ, PROBE_BYTES, next_read_size

MiB = 1024 * 1024
FAST = 0.00001  # seconds to hand a chunk over without waiting


def test_probes_small_then_doubles_for_a_fast_client() -> None:
    assert next_read_size(MIN_READ, MIN_READ, FAST, MiB) == MIN_READ
    assert next_read_size(PROBE_BYTES, MIN_READ, FAST, MiB) == 2 * MIN_READ
    assert next_read_size(10 * MiB, 512 * 1024, FAST, MiB) == MiB
    assert next_read_size(10 * MiB, MiB, FAST, MiB) == MiB  # never beyond the chunk size


def test_a_slow_client_keeps_minimal_reads_however_much_it_got() -> None:
    for sent in (PROBE_BYTES, 10 * MiB, 1000 * MiB):
        assert next_read_size(sent, MIN_READ, 1.0, MiB) == MIN_READ  # 32 KiB/s


def test_rate_caps_reads_to_about_fifty_milliseconds_of_transfer() -> None:
    assert next_read_size(50 * MiB, 4 * MiB, 0.2, 16 * MiB) == int(20 * MiB * 0.05)  # 20 MiB/s
