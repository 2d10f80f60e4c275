"""`workload.balance`: credit accounting and even shares (worker/credits.py)."""

from __future__ import annotations

from w5xde.worker.credits import (
    MIN_CREDIT_BYTES,
    EvenShares,
    credit_exhausted,
    credit_window,
)
from w5xde.worker.link_sizing import (
    AUTO_FLOOR_BYTES,
    MAX_SEND_BYTES,
    MIN_SEND_BYTES,
    buffer_floor,
    send_bytes,
)
from w5xde.worker.progress import StreamProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_credit_window_fits_the_batches_and_its_limit() -> None:
    assert credit_window(65536, 1 << 30) == MIN_CREDIT_BYTES
    assert credit_window(8 << 20, 1 << 30) == 32 << 20
    assert credit_window(8 << 20, 16 << 20) == 16 << 20


def test_a_stream_waits_once_its_credit_is_used_but_may_always_send_one_frame() -> None:
    assert not credit_exhausted(credit=0, unacked_bytes=0)
    assert credit_exhausted(credit=0, unacked_bytes=1)
    assert not credit_exhausted(credit=1000, unacked_bytes=999)
    assert credit_exhausted(credit=1000, unacked_bytes=1000)


def test_even_shares_hold_the_stream_that_runs_ahead() -> None:
    shares = EvenShares(lead=1000)
    fast, slow = shares.join(), shares.join()
    shares.set_connected(fast, True)
    shares.set_connected(slow, True)
    fast.produced += 999
    assert shares.may_produce(fast)
    fast.produced += 1
    assert not shares.may_produce(fast)
    # The slowest stream itself is never held.
    assert shares.may_produce(slow)
    slow.produced += 500
    assert shares.may_produce(fast)


def test_even_shares_ignore_a_disconnected_peer_and_a_newcomer_owes_nothing() -> None:
    shares = EvenShares(lead=1000)
    first, gone = shares.join(), shares.join()
    shares.set_connected(first, True)
    first.produced = 50_000
    assert shares.may_produce(first)  # `gone` never connected: it holds nobody
    shares.set_connected(gone, True)
    assert gone.produced == 50_000  # starts level with the slowest connected stream
    assert shares.may_produce(first)
    late = shares.join()
    assert late.produced == 50_000
    shares.leave(gone)
    assert shares.shares() == [50_000, 50_000]


def test_send_size_follows_the_link() -> None:
    assert send_bytes(None, 3600) == 4 * MIN_SEND_BYTES
    assert send_bytes(12.5e6, 3600) == MIN_SEND_BYTES
    assert send_bytes(250e6, 3600) == 500_000
    assert send_bytes(10e9, 3600) == MAX_SEND_BYTES
    assert send_bytes(12.5e6, 4 << 20) == 4 << 20  # always at least one batch


def test_the_auto_buffer_floor_is_two_bandwidth_delay_products_within_bounds() -> None:
    assert buffer_floor(12.5e6, 0.0001, 32 << 20) == AUTO_FLOOR_BYTES
    assert buffer_floor(250e6, 0.02, 32 << 20) == 10_000_000
    assert buffer_floor(10e9, 1.0, 32 << 20) == 32 << 20


def test_even_shares_do_not_wait_for_a_stalled_stream_and_take_it_back_level() -> None:
    clock = FakeClock()
    shares = EvenShares(lead=1000)
    progresses = [StreamProgress(5.0, clock=clock) for _ in range(2)]
    live, stuck = (shares.join(progress) for progress in progresses)
    for slot in (live, stuck):
        slot.progress.now_connected()
        shares.set_connected(slot, True)
    stuck.progress.outstanding()  # frames out, no ACK comes back
    live.produced = 5000
    assert not shares.may_produce(live)  # `stuck` is only slow so far
    clock.now += 5.1
    assert stuck.progress.stalled()
    assert shares.may_produce(live)  # a stalled peer holds nobody back
    stuck.progress.acknowledged(window_empty=True)
    shares.rejoin(stuck)
    assert stuck.produced == 5000  # back level with the flowing streams, owing nothing
    assert shares.may_produce(live)
