"""Per-thread counters: each stream thread owns one, so the hot path takes no lock.

Readers (reports, metrics) sum them; a plain int read is atomic under the GIL and a
report that is a few batches stale is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class Counters:
    """Cumulative figures of one stream direction."""

    batches: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    network_seconds: float = 0.0
    compression_seconds: float = 0.0
    lost_batches: int = 0
    corrupt_batches: int = 0
    resent_batches: int = 0
    duplicate_batches: int = 0
    #: Connections closed because the peer broke the protocol (after the handshake).
    protocol_errors: int = 0

    def add(self, other: Counters) -> None:
        for field in fields(self):
            name = field.name
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def copy(self) -> Counters:
        total = Counters()
        total.add(self)
        return total
