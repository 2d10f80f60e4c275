"""The kernel's own view of a TCP connection (`TCP_INFO`): retransmissions, congestion
window, smoothed RTT and delivery rate, the facts iperf3 and k8s-netperf report.

Read by the sending stream's own thread (it owns the socket) on its tuning tick, so a
reading costs one `getsockopt` every few seconds per stream and never races a close.
The layout is `struct tcp_info` from `linux/tcp.h`; fields a kernel does not fill
(an older one returns a shorter struct) read as 0.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

#: Bytes asked for: through `tcpi_delivery_rate` (Linux 4.9+).
_LENGTH = 168
_SND_MSS = 16
_RTT_US = 68
_SND_CWND = 80
_TOTAL_RETRANS = 100
_DELIVERY_RATE = 160


@dataclass(frozen=True, slots=True)
class TcpFacts:
    """One reading of one connection."""

    #: Segments retransmitted over the connection's life.
    retransmitted_segments: int = 0
    #: Congestion window, in segments, and the MSS that turns it into bytes.
    cwnd_segments: int = 0
    mss_bytes: int = 0
    #: The kernel's smoothed round trip.
    srtt_seconds: float = 0.0
    #: The kernel's most recent delivery-rate sample (bytes/s).
    delivery_rate_bytes_per_second: float = 0.0


def _field(data: bytes, offset: int, form: str) -> int:
    size = struct.calcsize(form)
    if len(data) < offset + size:
        return 0
    value: int = struct.unpack_from(form, data, offset)[0]
    return value


def parse(data: bytes) -> TcpFacts:
    return TcpFacts(
        retransmitted_segments=_field(data, _TOTAL_RETRANS, "=I"),
        cwnd_segments=_field(data, _SND_CWND, "=I"),
        mss_bytes=_field(data, _SND_MSS, "=I"),
        srtt_seconds=_field(data, _RTT_US, "=I") / 1e6,
        delivery_rate_bytes_per_second=float(_field(data, _DELIVERY_RATE, "=Q")),
    )


def read(sock: socket.socket) -> TcpFacts | None:
    """The socket's facts now; None where the kernel has no TCP_INFO for it."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        return parse(sock.getsockopt(socket.IPPROTO_TCP, option, _LENGTH))
    except OSError:
        return None


class TcpLedger:
    """One stream's TCP facts across its connections: the newest reading, and the
    retransmissions of connections that ended (a reconnect restarts the kernel's count)."""

    __slots__ = ("current", "retired_retransmits")

    def __init__(self) -> None:
        self.current = TcpFacts()
        self.retired_retransmits = 0

    def sample(self, sock: socket.socket) -> None:
        facts = read(sock)
        if facts is not None:
            self.current = facts

    def connection_ended(self, sock: socket.socket) -> None:
        self.sample(sock)
        self.retired_retransmits += self.current.retransmitted_segments
        self.current = TcpFacts()

    @property
    def retransmitted_segments(self) -> int:
        return self.retired_retransmits + self.current.retransmitted_segments
