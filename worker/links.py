"""Per-link figures: what each outgoing link (this worker -> one peer) moved, and how
long its acknowledgements took to come back.

The sender's streams already count per stream (`Counters`); this module adds the one
thing they lack, the ACK round trip, and turns both into per-peer figures:

- `AckClock` (one per stream, written only by the stream's thread): after each
  coalesced `sendmsg` the stream notes (highest sequence sent, time); an ACK for
  sequence S pops every note up to S and takes one sample, now minus the newest
  popped note's time.  So a sample costs a deque pop per coalesced write, never work
  per batch, and a cumulative ACK that covers several writes gives one sample (the
  newest write it covers, the tightest bound).  After a reconnect the notes are
  forgotten: a replayed frame's first send time would count the outage as RTT.
- `RttSamples`: the samples of the last rate window, bounded: `BUCKETS` time buckets of
  a quarter window each, each a reservoir (Algorithm R) of at most `BUCKET_CAPACITY`
  floats in an `array`.  Reading takes the buckets of the last window (between one and
  1.25 windows of samples) and moves nothing, like the worker's rate window.
- `LinkBook`: per-peer cumulative counters snapshotted by the worker's sampler thread,
  so a report reads each link's rates over the same window as the worker's own.
"""

from __future__ import annotations

import math
import random
import re
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from w5xde.contract.figures import percentile
from w5xde.contract.report import MAX_LINKS_PER_WORKER, LinkReport, PeerLoss
from w5xde.worker.config import WorkerConfig
from w5xde.worker.counters import SendCounters
from w5xde.worker.progress import StreamProgress, worst
from w5xde.worker.tcp_info import TcpLedger

#: Rates (and RTT percentiles) are over the reporting interval, or this without one.
DEFAULT_RATE_WINDOW_S = 2.0
#: A window is this many time buckets of RTT samples, plus the one being filled.
BUCKETS_PER_WINDOW = 4
BUCKETS = BUCKETS_PER_WINDOW + 1
#: Samples kept per bucket: 5 x 128 floats (5 KiB) per stream at most.
BUCKET_CAPACITY = 128
#: Send notes kept per stream; older ones are dropped (that only loses samples).
MAX_SEND_NOTES = 1024

_ORDINAL = re.compile(r"-([0-9]+)$")


def rate_window_seconds(config: WorkerConfig) -> float:
    """The window of a worker's rates: its reporting interval, else 2 s (`w5xde local`)."""
    return config.reporting.interval_seconds if config.reporting else DEFAULT_RATE_WINDOW_S


class _Bucket:
    __slots__ = ("number", "samples", "seen")

    def __init__(self, number: int) -> None:
        self.number = number
        self.seen = 0
        self.samples = array("d")


class RttSamples:
    """ACK round trips (seconds) of about the last window, in bounded memory.

    One writer (the stream's thread) calls `add`; any thread may call `recent`.  The
    writer replaces a bucket object instead of clearing it, so a reader holding the old
    one never sees it change under it.
    """

    def __init__(
        self,
        window_seconds: float,
        *,
        capacity: int = BUCKET_CAPACITY,
        random_below: Callable[[int], int] | None = None,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.bucket_seconds = window_seconds / BUCKETS_PER_WINDOW
        self.capacity = capacity
        self._random_below = random_below or random.Random().randrange  # noqa: S311 - sampling, not secrets
        self._buckets: list[_Bucket | None] = [None] * BUCKETS
        #: Every sample ever added, for the Prometheus summary's `_count` and `_sum`.
        self.count = 0
        self.total_seconds = 0.0

    def _number(self, at: float) -> int:
        return math.floor(at / self.bucket_seconds)

    def add(self, seconds: float, at: float) -> None:
        number = self._number(at)
        slot = number % BUCKETS
        bucket = self._buckets[slot]
        if bucket is None or bucket.number != number:
            bucket = _Bucket(number)
            self._buckets[slot] = bucket
        bucket.seen += 1
        if len(bucket.samples) < self.capacity:
            bucket.samples.append(seconds)
        else:
            index = self._random_below(bucket.seen)
            if index < self.capacity:
                bucket.samples[index] = seconds
        self.count += 1
        self.total_seconds += seconds

    def recent(self, now: float) -> list[float]:
        """The kept samples of the buckets within the last window before `now`."""
        newest = self._number(now)
        kept: list[float] = []
        for bucket in list(self._buckets):
            if bucket is not None and newest - BUCKETS < bucket.number <= newest:
                kept.extend(bucket.samples)
        return kept


class AckClock:
    """The send notes of one stream and the round trips its ACKs give (see the module)."""

    __slots__ = ("_notes", "rtt")

    def __init__(self, window_seconds: float) -> None:
        self._notes: deque[tuple[int, float]] = deque(maxlen=MAX_SEND_NOTES)
        self.rtt = RttSamples(window_seconds)

    def sent(self, highest_sequence: int, at: float) -> None:
        """Everything up to `highest_sequence` has been handed to the kernel at `at`."""
        notes = self._notes
        if highest_sequence >= 0 and (not notes or notes[-1][0] < highest_sequence):
            notes.append((highest_sequence, at))

    def acked(self, sequence: int, at: float) -> None:
        """A cumulative ACK for `sequence` was read at `at`."""
        notes = self._notes
        newest = -1.0
        while notes and notes[0][0] <= sequence:
            newest = notes.popleft()[1]
        if newest >= 0:
            self.rtt.add(max(0.0, at - newest), at)

    def forget(self) -> None:
        """A new connection: sends of the old one would count the outage as a round trip."""
        self._notes.clear()


class OutgoingLike(Protocol):
    """What the book reads of an outgoing stream (`sender.OutgoingStream`)."""

    @property
    def peer(self) -> str: ...
    @property
    def counters(self) -> SendCounters: ...
    @property
    def acks(self) -> AckClock: ...
    @property
    def connected(self) -> bool: ...
    @property
    def progress(self) -> StreamProgress: ...
    @property
    def tcp(self) -> TcpLedger: ...


def peer_names(own_name: str, addresses: Sequence[str]) -> dict[str, str]:
    """The worker name of each peer address, by index: `NAME-<index>` when this worker's
    name ends in an ordinal (pods, `w5xde local`), else the address's first DNS label."""
    match = _ORDINAL.search(own_name)
    names: dict[str, str] = {}
    for index, address in enumerate(addresses):
        if match is not None:
            names[address] = f"{own_name[: match.start()]}-{index}"
        else:
            names[address] = address.rpartition(":")[0].strip("[]").split(".", 1)[0] or address
    return names


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    per_peer: dict[str, SendCounters]


@dataclass(frozen=True, slots=True)
class LinkFigures:
    """One link's figures now: `LinkReport` plus the summary counts Prometheus wants."""

    report: LinkReport
    rtt_count: int
    rtt_sum_seconds: float
    #: Stalls the link's streams came out of (by an ACK or a reconnect), cumulative.
    stalls: int = 0


def _per_peer(streams: Iterable[OutgoingLike]) -> dict[str, SendCounters]:
    summed: dict[str, SendCounters] = {}
    for stream in streams:
        counters = summed.get(stream.peer)
        if counters is None:
            summed[stream.peer] = stream.counters.copy()
        else:
            counters.add(stream.counters)
    return summed


class LinkBook:
    """Per-peer counters over a sliding window, for each link's rates; thread-safe."""

    def __init__(self, window_seconds: float, started: float) -> None:
        self.window_seconds = window_seconds
        self._samples: deque[_Sample] = deque([_Sample(started, {})])
        self._lock = threading.Lock()

    def sample(self, at: float, streams: Iterable[OutgoingLike]) -> None:
        """Called by the worker's sampler thread (every half second)."""
        snapshot = _Sample(at, _per_peer(streams))
        with self._lock:
            self._samples.append(snapshot)
            while len(self._samples) > 2 and at - self._samples[1].at >= self.window_seconds:
                self._samples.popleft()

    def figures(
        self, now: float, streams: Sequence[OutgoingLike], names: dict[str, str]
    ) -> list[LinkFigures]:
        """Each peer's link now, with rates from the newest sample a window old."""
        with self._lock:
            base = self._samples[0]
            for candidate in self._samples:
                if now - candidate.at >= self.window_seconds:
                    base = candidate
                else:
                    break
        seconds = max(now - base.at, 1e-3)
        by_peer: dict[str, list[OutgoingLike]] = {}
        for stream in streams:
            by_peer.setdefault(stream.peer, []).append(stream)
        links: list[LinkFigures] = []
        for address, members in by_peer.items():
            current = _per_peer(members)[address]
            before = base.per_peer.get(address, SendCounters())
            rtts: list[float] = []
            for stream in members:
                rtts.extend(stream.acks.rtt.recent(now))
            rtts.sort()
            state, state_seconds, message = worst(
                [
                    (*stream.progress.state(now), stream.progress.state_message(now))
                    for stream in members
                ]
            )
            report = LinkReport(
                peer=names.get(address, address),
                peer_address=next(
                    (
                        stream_address
                        for stream in members
                        if (stream_address := getattr(stream, "remote_address", ""))
                    ),
                    "",
                ),
                streams=len(members),
                streams_connected=sum(1 for stream in members if stream.connected),
                raw_bytes_per_second=round(_rate(current.raw_bytes, before.raw_bytes, seconds), 1),
                wire_bytes_per_second=round(
                    _rate(current.wire_bytes, before.wire_bytes, seconds), 1
                ),
                batches_per_second=round(_rate(current.batches, before.batches, seconds), 2),
                batches=current.batches,
                raw_bytes=current.raw_bytes,
                wire_bytes=current.wire_bytes,
                resent_batches=current.resent_batches,
                rtt_p50_seconds=round(percentile(rtts, 0.5), 6),
                rtt_p99_seconds=round(percentile(rtts, 0.99), 6),
                rtt_samples=len(rtts),
                state=state,
                state_seconds=round(state_seconds, 1),
                state_message=message,
                tcp_retransmitted_segments=sum(s.tcp.retransmitted_segments for s in members),
                tcp_cwnd_bytes=sum(
                    s.tcp.current.cwnd_segments * s.tcp.current.mss_bytes for s in members
                ),
                tcp_srtt_seconds=round(max(s.tcp.current.srtt_seconds for s in members), 6),
                tcp_delivery_rate_bytes_per_second=round(
                    sum(s.tcp.current.delivery_rate_bytes_per_second for s in members), 1
                ),
            )
            links.append(
                LinkFigures(
                    report=report,
                    rtt_count=sum(stream.acks.rtt.count for stream in members),
                    rtt_sum_seconds=sum(stream.acks.rtt.total_seconds for stream in members),
                    stalls=sum(stream.progress.stalls for stream in members),
                )
            )
        links.sort(key=lambda link: link.report.peer)
        return links[:MAX_LINKS_PER_WORKER]


def _rate(now: int, before: int, seconds: float) -> float:
    # A stream that went away and came back restarts its counters: never a negative rate.
    return max(0, now - before) / seconds


def lost_from(lost_by_sender: dict[str, int]) -> list[PeerLoss]:
    """The non-zero losses by sender, largest first, within the report's bound."""
    ranked = sorted(
        ((peer, lost) for peer, lost in lost_by_sender.items() if lost > 0),
        key=lambda item: (-item[1], item[0]),
    )
    return [PeerLoss(peer=peer, lost_batches=lost) for peer, lost in ranked][:MAX_LINKS_PER_WORKER]
