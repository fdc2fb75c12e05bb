"""Download read sizing: slow clients hold little memory, fast ones reach full-size reads quickly."""

from __future__ import annotations

from updown_app.api.streaming import MIN_READ, next_read_size

MiB = 1024 * 1024


def test_starts_small_and_ramps_with_time_for_a_fast_client() -> None:
    fast = (MIN_READ, 0.00001)  # drained 64 KiB in 10 µs
    assert next_read_size(0.0, *fast, max_read=MiB) == MIN_READ
    assert next_read_size(0.006, *fast, max_read=MiB) == 2 * MIN_READ
    assert next_read_size(0.05, *fast, max_read=MiB) == MiB  # capped by the chunk size


def test_a_slow_client_keeps_minimal_reads_however_long_it_runs() -> None:
    slow = (MIN_READ, 2.0)  # 32 KiB/s
    for elapsed in (0.0, 1.0, 60.0, 3600.0):
        assert next_read_size(elapsed, *slow, max_read=MiB) == MIN_READ


def test_rate_caps_reads_to_about_fifty_milliseconds_of_transfer() -> None:
    twenty_mb_per_s = (2 * MiB, 0.1)
    assert next_read_size(10.0, *twenty_mb_per_s, max_read=16 * MiB) == int(20 * MiB * 0.05)
