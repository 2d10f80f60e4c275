"""`workload.balance`: how a worker splits its batches among its peers.

`capacity`: every receiver grants each sender stream a credit (the DATA payload bytes
that stream may have unacknowledged, carried in its ACKs, docs/protocol.md); a stream
that has used its credit produces nothing until the receiver acknowledges, so the
worker's compression goes to the streams whose peers take it, and a slow peer or link
gets less without holding anyone up.

`even`: every connected peer gets the same share: a stream may run at most
`EVEN_LEAD_BYTES` of raw bytes ahead of the slowest flowing stream of its worker, so
the cluster goes at the pace of its slowest link (what an even split means).  A stream
that is disconnected or stalled (`progress.py`) does not count: one frozen peer must
not hold back every other stream of the worker.

Pure accounting plus one lock; the streams call `may_produce` once per coalesced write,
not per batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from w5xde.worker.progress import StreamProgress

#: The credit a receiver grants each capacity-balanced stream, at least this much...
MIN_CREDIT_BYTES = 4 * 1024 * 1024
#: ...and at least this many batches (so a large batch always fits).
CREDIT_BATCHES = 4
#: What a capacity-balanced sender assumes until the first credit arrives.
INITIAL_CREDIT_BYTES = 1024 * 1024
#: How far (raw bytes) an even-balanced stream may run ahead of its slowest sibling.
EVEN_LEAD_BYTES = 2 * 1024 * 1024


def credit_window(batch_bytes: int, limit: int) -> int:
    """The credit a receiver grants one stream: room for the link, never above `limit`."""
    return min(limit, max(MIN_CREDIT_BYTES, CREDIT_BATCHES * batch_bytes))


def credit_exhausted(credit: int, unacked_bytes: int) -> bool:
    """A stream waits for ACKs once its unacknowledged payload reaches its credit.

    A stream with nothing unacknowledged may always send one frame, whatever its size.
    """
    return unacked_bytes > 0 and unacked_bytes >= credit


@dataclass(slots=True)
class ShareSlot:
    """One stream's place in `EvenShares`; `produced` is written by its own thread only."""

    produced: int = 0
    connected: bool = False
    #: The stream's progress: a stalled stream leaves the floor until it moves again.
    progress: StreamProgress = field(default_factory=StreamProgress)


class EvenShares:
    """Keeps a worker's connected streams within `lead` raw bytes of each other."""

    def __init__(self, lead: int = EVEN_LEAD_BYTES) -> None:
        self.lead = lead
        self._slots: list[ShareSlot] = []
        self._changed = threading.Condition()

    def join(self, progress: StreamProgress | None = None) -> ShareSlot:
        """A new stream starts level with the slowest one (it owes nobody a backlog)."""
        with self._changed:
            slot = ShareSlot(produced=self._floor())
            if progress is not None:
                slot.progress = progress
            self._slots.append(slot)
            return slot

    def leave(self, slot: ShareSlot) -> None:
        with self._changed:
            if slot in self._slots:
                self._slots.remove(slot)
            self._changed.notify_all()

    def set_connected(self, slot: ShareSlot, connected: bool) -> None:
        with self._changed:
            if connected and not slot.connected:
                slot.produced = max(slot.produced, self._floor())
            slot.connected = connected
            self._changed.notify_all()

    def rejoin(self, slot: ShareSlot) -> None:
        """A stream that was stalled moves again: it starts level with the slowest
        flowing one instead of holding them all back until it caught up."""
        with self._changed:
            slot.produced = max(slot.produced, self._floor(excluding=slot))
            self._changed.notify_all()

    def may_produce(self, slot: ShareSlot) -> bool:
        """Whether `slot` is within `lead` of the slowest connected stream."""
        return slot.produced - self._floor() < self.lead

    def advanced(self) -> None:
        """Wake streams waiting for a slower sibling (called after each coalesced write)."""
        with self._changed:
            self._changed.notify_all()

    def wait(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def _floor(self, excluding: ShareSlot | None = None) -> int:
        live = [
            slot.produced
            for slot in self._slots
            if slot.connected and slot is not excluding and not slot.progress.stalled()
        ]
        return min(live) if live else 0

    def shares(self) -> list[int]:
        return [slot.produced for slot in self._slots]
