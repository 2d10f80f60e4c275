"""Per-link figures on the worker: the ACK clock, the bounded RTT samples, link rates."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from w5xde.contract.figures import percentile
from w5xde.local.run import free_ports
from w5xde.worker.config import WorkerConfig
from w5xde.worker.counters import SendCounters
from w5xde.worker.links import (
    BUCKET_CAPACITY,
    BUCKETS,
    AckClock,
    LinkBook,
    RttSamples,
    lost_from,
    peer_names,
)
from w5xde.worker.metrics import WorkerCollector
from w5xde.worker.progress import StreamProgress
from w5xde.worker.runtime import Worker
from w5xde.worker.tcp_info import TcpLedger


def test_percentiles_of_known_samples_are_nearest_rank() -> None:
    samples = RttSamples(10.0)
    for millis in range(100, 0, -1):  # 100 ms .. 1 ms, out of order
        samples.add(millis / 1000, at=1.0)
    kept = sorted(samples.recent(1.0))
    assert len(kept) == 100
    assert percentile(kept, 0.5) == 0.050
    assert percentile(kept, 0.99) == 0.099
    assert samples.count == 100
    assert samples.total_seconds == pytest.approx(sum(range(1, 101)) / 1000)


def test_samples_older_than_the_window_drop_out_and_reading_moves_nothing() -> None:
    samples = RttSamples(4.0)  # buckets of 1 s; a read covers the last 4 to 5 s
    samples.add(0.5, at=0.2)
    samples.add(0.01, at=4.5)
    assert sorted(samples.recent(4.9)) == [0.01, 0.5]
    assert sorted(samples.recent(4.9)) == [0.01, 0.5]  # the same again
    assert samples.recent(5.1) == [0.01]  # the bucket of t=0.2 is now older than the window
    assert samples.recent(20.0) == []  # an idle link has no recent round trip
    # A bucket slot reused by a later time starts empty, not on top of the old one.
    later = 0.2 + 2 * BUCKETS  # the slot of t=0.2 again
    samples.add(0.02, at=later)
    assert samples.recent(later) == [0.02]


def test_a_busy_bucket_keeps_a_bounded_uniform_reservoir() -> None:
    picks = iter(range(10**6))
    samples = RttSamples(4.0, random_below=lambda bound: next(picks) % bound)
    for index in range(10_000):
        samples.add(index / 1e6, at=1.5)
    kept = samples.recent(1.5)
    assert len(kept) == BUCKET_CAPACITY
    assert samples.count == 10_000
    # Replacements happened: the reservoir is not just the first samples.
    assert max(kept) > (BUCKET_CAPACITY - 1) / 1e6


def test_the_ack_clock_times_the_newest_write_an_ack_covers() -> None:
    clock = AckClock(10.0)
    clock.sent(9, at=1.0)  # a coalesced write ending with sequence 9
    clock.sent(9, at=1.05)  # nothing new (a replay flush): the earlier note stands
    clock.sent(19, at=1.1)
    clock.acked(5, at=1.2)  # covers no whole write: no sample
    assert clock.rtt.count == 0
    clock.acked(15, at=1.3)  # covers the write of 9 only
    clock.acked(19, at=1.5)  # covers the write of 19
    clock.acked(19, at=1.6)  # a repeated ACK: nothing left to time
    assert sorted(clock.rtt.recent(1.6)) == pytest.approx([0.3, 0.4])
    clock.sent(29, at=2.0)
    clock.forget()  # reconnected: the old connection's writes are not timed
    clock.acked(29, at=9.0)
    assert clock.rtt.count == 2


def test_peer_names_follow_the_worker_naming() -> None:
    pods = [f"demo-{i}.demo.ns.svc.cluster.local:7070" for i in range(3)]
    assert peer_names("demo-1", pods)[pods[2]] == "demo-2"
    local = ["127.0.0.1:10001", "127.0.0.1:10002"]
    assert peer_names("local-0", local) == {local[0]: "local-0", local[1]: "local-1"}
    assert peer_names("solo", ["other.example:7070"]) == {"other.example:7070": "other"}


def test_losses_by_sender_keep_only_nonzero_largest_first() -> None:
    listed = lost_from({"a-0": 0, "a-1": 2, "a-2": 5})
    assert [(item.peer, item.lost_batches) for item in listed] == [("a-2", 5), ("a-1", 2)]


class _Stream:
    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.counters = SendCounters()
        self.acks = AckClock(2.0)
        self.connected = True
        self.progress = StreamProgress()
        self.progress.now_connected()
        self.tcp = TcpLedger()


def test_link_rates_are_over_the_window_and_streams_of_a_peer_add_up() -> None:
    first, second, other = _Stream("p:1"), _Stream("p:1"), _Stream("q:1")
    book = LinkBook(2.0, started=0.0)
    book.sample(1.0, [first, second, other])
    for stream, raw in ((first, 1000), (second, 3000), (other, 500)):
        stream.counters.raw_bytes += raw
        stream.counters.wire_bytes += raw // 2
        stream.counters.batches += 1
    book.sample(3.0, [first, second, other])
    first.acks.sent(0, at=2.9)
    first.acks.acked(0, at=2.95)
    links = book.figures(3.0, [first, second, other], {"p:1": "w-1", "q:1": "w-2"})
    by_peer = {link.report.peer: link.report for link in links}
    assert set(by_peer) == {"w-1", "w-2"}
    assert by_peer["w-1"].streams == 2
    assert by_peer["w-1"].raw_bytes == 4000
    assert by_peer["w-1"].raw_bytes_per_second == 2000.0  # 4000 bytes over 2 s
    assert by_peer["w-1"].batches_per_second == 1.0
    assert by_peer["w-1"].rtt_samples == 1
    assert by_peer["w-1"].rtt_p99_seconds == pytest.approx(0.05)
    assert by_peer["w-2"].wire_bytes == 250
    assert by_peer["w-2"].rtt_samples == 0
    assert all(math.isfinite(link.rtt_sum_seconds) for link in links)


KEY = b"test-key-0123456789abcdef"


@pytest.fixture
def mesh_of_three() -> Iterator[list[Worker]]:
    """Three real workers on loopback, all-to-all: six links."""
    ports = free_ports(3)
    group = [
        Worker(
            WorkerConfig.model_validate(
                {
                    "name": f"t-{index}", "clusterId": "unit", "listenHost": "127.0.0.1",
                    "metricsPort": 0, "peers": [f"127.0.0.1:{port}" for port in ports],
                    "workload": {"batchBytes": 16384, "topology": "all-to-all"},
                    "compression": {"level": 1}, "network": {"socketBufferBytes": 262144},
                }
            ),
            KEY,
        )
        for index in range(3)
    ]  # fmt: skip
    for worker in group:
        worker.start()
    yield group
    for worker in group:
        worker.stop(grace_seconds=0.2)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _all_links_timed(group: list[Worker]) -> bool:
    reports = [worker.report() for worker in group]
    return all(
        len(report.links) == len(group) - 1 and all(link.rtt_samples > 0 for link in report.links)
        for report in reports
    )


def test_real_workers_time_every_link_and_link_bytes_add_up(mesh_of_three: list[Worker]) -> None:
    group = mesh_of_three
    wait_for(lambda: _all_links_timed(group))
    for worker in group:
        names = {link.peer for link in worker.report().links}
        assert names == {other.config.name for other in group} - {worker.config.name}
        for link in worker.report().links:
            assert 0 < link.rtt_p50_seconds <= link.rtt_p99_seconds < 5.0
            assert math.isfinite(link.rtt_p99_seconds)
            assert link.raw_bytes_per_second > 0
            assert link.wire_bytes_per_second > 0
            assert link.streams_connected == 1
    registry = CollectorRegistry()
    registry.register(WorkerCollector(group[0]))
    text = generate_latest(registry).decode()
    for peer in ("t-1", "t-2"):
        assert f'w5xde_link_ack_rtt_seconds{{peer="{peer}",quantile="0.99"}}' in text
        assert f'w5xde_link_sent_raw_bytes_total{{peer="{peer}"}}' in text
        assert f'w5xde_link_ack_rtt_seconds_count{{peer="{peer}"}}' in text
    for worker in group:
        worker.stop(grace_seconds=0.5)
    for worker in group:
        report, extras = worker.report(), worker.extras()
        # Every link's counters are its streams' counters: together, the worker's sends.
        assert sum(link.raw_bytes for link in report.links) == extras.sent_raw_bytes > 0
        assert sum(link.wire_bytes for link in report.links) == extras.sent_wire_bytes
        assert sum(link.batches for link in report.links) == extras.sent_batches
    # And what the links delivered the receivers verified; the difference is at most the
    # frames still unacknowledged (a peer stopped before its ACK was read).
    delivered = sum(link.raw_bytes for worker in group for link in worker.report().links)
    received = sum(worker.report().raw_bytes for worker in group)
    unacked = sum(worker.extras().unacked_batches for worker in group)
    assert delivered <= received <= delivered + unacked * 16384
