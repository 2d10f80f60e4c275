"""A stream's progress and the state its link reports (worker/progress.py), on a fake clock."""

from __future__ import annotations

import pytest

from w5xde.api.v1alpha1 import LinkState
from w5xde.worker.pacing import RateSplit
from w5xde.worker.progress import (
    STALL_AFTER_S,
    StreamProgress,
    stall_after_seconds,
    worst,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_connected_stream_with_acks_coming_flows(clock: FakeClock) -> None:
    progress = StreamProgress(8.0, clock=clock)
    progress.now_connected()
    for _ in range(10):
        progress.outstanding()
        clock.now += 5.0  # slow, but each ACK comes within the deadline
        assert not progress.acknowledged(window_empty=False)
    assert progress.state() == (LinkState.FLOWING, 50.0)
    assert progress.flowing()


def test_outstanding_frames_without_ack_progress_stall_and_recover(clock: FakeClock) -> None:
    progress = StreamProgress(8.0, clock=clock)
    progress.now_connected()
    progress.outstanding()
    clock.now += 8.0
    assert progress.state()[0] is LinkState.FLOWING  # at the deadline, not past it
    clock.now += 1.0
    state, seconds = progress.state()
    assert (state, seconds) == (LinkState.STALLED, 9.0)
    assert "no acknowledgement for 9 s" in progress.state_message()
    assert not progress.flowing()
    # More frames going out do not restart the clock: only an ACK does.
    progress.outstanding()
    assert progress.silent_seconds() == 9.0
    assert progress.acknowledged(window_empty=True)
    assert progress.stalls == 1
    assert progress.state()[0] is LinkState.FLOWING
    assert progress.state_message() == ""


def test_an_idle_stream_with_nothing_outstanding_never_stalls(clock: FakeClock) -> None:
    progress = StreamProgress(8.0, clock=clock)
    progress.now_connected()
    clock.now += 100
    assert progress.state()[0] is LinkState.FLOWING


def test_failing_connects_read_connecting_then_unreachable_or_refused(clock: FakeClock) -> None:
    progress = StreamProgress(8.0, clock=clock)
    progress.connect_failed(ConnectionRefusedError("connection refused"), refused=False)
    assert progress.state()[0] is LinkState.CONNECTING  # peers start at different times
    clock.now += 9
    progress.connect_failed(TimeoutError("timed out"), refused=False)
    assert progress.state() == (LinkState.UNREACHABLE, 9.0)
    assert progress.state_message() == "timed out"
    progress.connect_failed(ValueError("peer refused the handshake: WRONG_KEY"), refused=True)
    assert progress.state()[0] is LinkState.REFUSED
    progress.now_connected()
    assert progress.state()[0] is LinkState.FLOWING


def test_a_stream_ended_on_purpose_reads_flowing_not_connecting(clock: FakeClock) -> None:
    progress = StreamProgress(8.0, clock=clock)
    progress.now_connected()
    progress.disconnected()
    assert progress.state()[0] is LinkState.CONNECTING
    progress.finished()
    clock.now += 60
    assert progress.state()[0] is LinkState.FLOWING


def test_the_link_reports_its_worst_stream() -> None:
    assert worst([]) == (LinkState.CONNECTING, 0.0, "")
    states = [
        (LinkState.FLOWING, 30.0, ""),
        (LinkState.STALLED, 9.0, "no acknowledgement for 9 s"),
        (LinkState.UNREACHABLE, 40.0, "timed out"),
    ]
    assert worst(states)[0] is LinkState.STALLED


def test_the_stall_deadline_allows_for_a_slow_rate_limit() -> None:
    assert stall_after_seconds(65536, 0) == STALL_AFTER_S
    assert stall_after_seconds(65536, 20e6 / 3) == STALL_AFTER_S
    assert stall_after_seconds(4 << 20, 1e6) == pytest.approx(4 * (4 << 20) / 1e6)


def test_the_rate_limit_is_split_among_the_flowing_streams() -> None:
    split = RateSplit(40e6)
    split.split(6)
    assert split.per_stream == pytest.approx(40e6 / 6)
    split.split(2)  # after a scale down or with four streams stalled
    assert split.per_stream == pytest.approx(20e6)
    split.split(0)
    assert split.per_stream == 40e6
