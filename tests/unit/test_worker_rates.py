"""Rates over a sliding window: a report is a read and never moves the baseline."""

from __future__ import annotations

from w5xde.worker.counters import Counters
from w5xde.worker.rates import Rates, RateWindow, Snapshot


def _at(seconds: float, raw: int) -> Snapshot:
    return Snapshot(seconds, Counters(raw_bytes=raw), Counters(raw_bytes=raw // 2))


def test_the_rate_is_over_the_last_window() -> None:
    window = RateWindow(10.0, _at(0, 0))
    for second in range(1, 31):
        window.add(_at(second, second * 1000 if second <= 20 else 20_000))
    rates = window.rates(_at(30, 20_000))
    assert rates.seconds == 10
    assert rates.received.raw_bytes == 0  # nothing moved in the last 10 s
    busy_window = RateWindow(10.0, _at(0, 0))
    for second in range(1, 26):
        busy_window.add(_at(second, min(second, 20) * 1000))
    busy = busy_window.rates(_at(25, 20_000))
    assert busy.seconds == 10
    assert busy.received.raw_bytes == 5_000  # 15 s .. 20 s at 1000/s
    assert busy.sent.raw_bytes == 2_500


def test_reading_twice_gives_the_same_rate() -> None:
    window = RateWindow(5.0, _at(0, 0))
    for second in range(1, 11):
        window.add(_at(second, second * 100))
    now = _at(10, 1000)
    assert window.rates(now) == window.rates(now)
    assert window.rates(now).received.raw_bytes == 500


def test_before_a_full_window_the_rate_is_since_the_start() -> None:
    window = RateWindow(10.0, _at(0, 0))
    window.add(_at(1, 300))
    rates = window.rates(_at(2, 600))
    assert rates.seconds == 2
    assert rates.received.raw_bytes == 600


def test_the_window_keeps_bounded_memory() -> None:
    window = RateWindow(2.0, _at(0, 0))
    for tick in range(1, 10_000):
        window.add(_at(tick * 0.5, tick))
    assert len(window._samples) <= 6


def test_cpu_cost_is_process_cpu_per_gb_received() -> None:
    from w5xde.worker.reporting import cpu_cost

    received = Counters(raw_bytes=2_000_000_000, compression_seconds=0.6)
    sent = Counters(raw_bytes=2_000_000_000, compression_seconds=0.4)
    cost = cpu_cost(Rates(seconds=10, received=received, sent=sent, cpu_seconds=3.0))
    assert (cost.total, cost.compression) == (1.5, 0.5)
    # Nothing received: no figure rather than a division by zero or infinity.
    idle = cpu_cost(Rates(seconds=10, received=Counters(), sent=sent, cpu_seconds=3.0))
    assert (idle.total, idle.compression) == (0.0, 0.0)
