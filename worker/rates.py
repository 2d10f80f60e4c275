"""Rates over a sliding window of cumulative snapshots.

A sampler thread adds a snapshot every second; a report reads the rate between now
and the snapshot one window ago.  Reading never moves anything, so the operator, the
local CLI and a curious human can all ask for a report without skewing each other.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from w5xde.worker.counters import Counters, ReceiveCounters, SendCounters


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Cumulative figures at one moment (monotonic seconds)."""

    at: float
    received: ReceiveCounters
    sent: SendCounters
    #: Process CPU seconds (user + system) at that moment.
    cpu_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Rates:
    """What changed between two snapshots, and over how many seconds."""

    seconds: float
    received: Counters
    sent: Counters
    cpu_seconds: float = 0.0


def difference(now: Counters, before: Counters) -> Counters:
    return Counters(
        batches=now.batches - before.batches,
        raw_bytes=now.raw_bytes - before.raw_bytes,
        wire_bytes=now.wire_bytes - before.wire_bytes,
        network_seconds=now.network_seconds - before.network_seconds,
        compression_seconds=now.compression_seconds - before.compression_seconds,
        tls_seconds=now.tls_seconds - before.tls_seconds,
    )


class RateWindow:
    """Keeps about `window_seconds` of snapshots; thread-safe."""

    def __init__(self, window_seconds: float, first: Snapshot) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self._samples: deque[Snapshot] = deque([first])
        self._lock = threading.Lock()

    def add(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._samples.append(snapshot)
            # Keep one sample at least a window old, so a full window is always there.
            while len(self._samples) > 2 and (
                snapshot.at - self._samples[1].at >= self.window_seconds
            ):
                self._samples.popleft()

    def rates(self, now: Snapshot) -> Rates:
        """From the newest sample at least a window before `now` (else the oldest) to `now`."""
        with self._lock:
            base = self._samples[0]
            for sample in self._samples:
                if now.at - sample.at >= self.window_seconds:
                    base = sample
                else:
                    break
        seconds = max(now.at - base.at, 1e-3)
        return Rates(
            seconds=seconds,
            received=difference(now.received, base.received),
            sent=difference(now.sent, base.sent),
            cpu_seconds=max(0.0, now.cpu_seconds - base.cpu_seconds),
        )
