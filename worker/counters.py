"""Per-thread counters: each stream thread owns one, so the hot path takes no lock.

One owner per figure: a sender stream counts into its `SendCounters` (what it sent and
what the peer acknowledged, and what its tuner measures: produced bytes, raw and
compressed batches, seconds waited), a receiving connection into its `ReceiveCounters`
(what it received, verified, found missing or duplicated).  Readers (the report, the
metrics, the tuner) read these and nothing else; a plain int read is atomic under the
GIL and a report that is a few batches stale is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Self


@dataclass(slots=True)
class Counters:
    """What both directions count."""

    batches: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    network_seconds: float = 0.0
    compression_seconds: float = 0.0
    #: Encrypting or decrypting and the copies through OpenSSL's memory BIOs (TLS only;
    #: part of `network_seconds`).
    tls_seconds: float = 0.0
    #: Connections closed because the peer broke the protocol (after the handshake).
    protocol_errors: int = 0

    def add(self, other: Self) -> None:
        for field in fields(self):
            name = field.name
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def copy(self) -> Self:
        total = type(self)()
        total.add(self)
        return total


@dataclass(slots=True)
class SendCounters(Counters):
    """One sender stream: `batches`/`rawBytes` acknowledged by the peer, `wireBytes`
    written to the socket; and what its tuner reads (stream_tuning.py)."""

    resent_batches: int = 0
    #: Produced (compressed or raw) before sending, acknowledged or not: the tuner's view.
    produced_raw_bytes: int = 0
    produced_payload_bytes: int = 0
    raw_batches: int = 0
    compressed_batches: int = 0
    #: Seconds waiting for ACKs, credit or siblings (also in `network_seconds`).
    wait_seconds: float = 0.0


@dataclass(slots=True)
class ReceiveCounters(Counters):
    """One receiving connection: what it verified, found missing, corrupt or replayed."""

    lost_batches: int = 0
    corrupt_batches: int = 0
    duplicate_batches: int = 0
