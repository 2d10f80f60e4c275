"""The sender's rate limiter, on a clock the test moves: bytes let through per second."""

from __future__ import annotations

import pytest

from w5xde.worker.pacing import RateLimiter

RATE = 1_000_000
BATCH = 16384


class Clock:
    """A clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(limiter: RateLimiter, clock: Clock, *, batches: int, work_s: float = 0.0) -> float:
    """A stream that sends a batch, spends `work_s` producing the next, and waits as told;
    returns when the last batch's wait ends."""
    started = clock.now
    for _ in range(batches):
        clock.now += limiter.take(BATCH)
        clock.now += work_s
    return clock.now - started


def test_the_first_batch_waits_exactly_its_share_of_a_second() -> None:
    clock = Clock()
    limiter = RateLimiter(RATE, clock=clock)
    assert limiter.take(BATCH) == pytest.approx(BATCH / RATE)


@pytest.mark.parametrize("work_s", [0.0, 0.001, 0.015])
def test_a_busy_stream_gets_exactly_the_rate(work_s: float) -> None:
    """Every batch is followed by the wait the limiter asks for; however long producing a
    batch takes (below the pace), the bytes per second of the clock are the rate."""
    clock = Clock()
    limiter = RateLimiter(RATE, clock=clock)
    batches = 3000
    elapsed = run(limiter, clock, batches=batches, work_s=work_s)
    # The last batch's producing time runs after its wait: not part of the pace.
    assert batches * BATCH / (elapsed - work_s) == pytest.approx(RATE, rel=1e-9)


def test_a_stream_slower_than_the_rate_never_waits() -> None:
    clock = Clock()
    limiter = RateLimiter(RATE, clock=clock)
    waits = []
    for _ in range(100):
        clock.now += 2 * BATCH / RATE
        waits.append(limiter.take(BATCH))
    assert waits == [0.0] * 100


@pytest.mark.parametrize("burst_s", [0.25, 1.0])
def test_after_a_stall_it_catches_up_on_at_most_the_burst(burst_s: float) -> None:
    clock = Clock()
    limiter = RateLimiter(RATE, burst_seconds=burst_s, clock=clock)
    run(limiter, clock, batches=10)
    clock.now += 30.0  # a stall: thirty seconds of allowance, of which only burst_s count
    free = 0
    while limiter.take(BATCH) == 0.0:
        free += 1
        assert free < 10_000
    # Sent without waiting: the burst's bytes (the batch that crosses it waits).
    assert free * BATCH <= burst_s * RATE < (free + 1) * BATCH
    # Then the pace is the rate again.
    clock.now += limiter.take(BATCH)
    elapsed = run(limiter, clock, batches=100)
    assert 100 * BATCH / elapsed == pytest.approx(RATE, rel=1e-9)


def test_the_default_burst_is_one_second() -> None:
    clock = Clock()
    limiter = RateLimiter(RATE, clock=clock)
    clock.now += 60.0
    free = 0
    while limiter.take(BATCH) == 0.0:
        free += 1
    assert free == RATE // BATCH


def test_a_rate_of_zero_is_no_limiter() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)


def test_any_positive_rate_paces_even_below_one_byte_per_second() -> None:
    clock = Clock()
    limiter = RateLimiter(0.5, clock=clock)
    assert limiter.take(1) == pytest.approx(2.0)


def test_the_refusal_of_a_zero_rate_says_why() -> None:
    with pytest.raises(ValueError, match="positive") as refused:
        RateLimiter(-1)
    assert str(refused.value) == "rate must be positive (0 means no limit: use no limiter)"
