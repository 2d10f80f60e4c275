"""Sizes derived from what a link measures: the bytes per send and the socket buffer floor/cap.

Pure functions of the drain rate (bytes/s the socket really sent) and the round-trip
time (TCP_INFO), plus the two kernel reads they need (SIOCOUTQ, TCP_INFO).
"""

from __future__ import annotations

import fcntl
import socket
import struct

#: Bytes per sendmsg: never below (system calls) nor above (latency of one write).
MIN_SEND_BYTES = 64 * 1024
MAX_SEND_BYTES = 1024 * 1024
#: A send should take about this long on the link at its measured rate.
SEND_SECONDS = 0.002
#: socketBufferBytes: auto keeps autotuning, but not below this...
AUTO_FLOOR_BYTES = 256 * 1024
#: ...and sizes the floor to this many bandwidth-delay products.
BDP_FACTOR = 2.0

_SIOCOUTQ = 0x5411  # TIOCOUTQ: bytes in the send queue not yet acknowledged by the peer
_TCP_INFO_RTT = struct.Struct("<I")
_TCP_INFO_RTT_OFFSET = 68  # struct tcp_info: tcpi_rtt (microseconds)
_TCP_INFO_BYTES = 104


def send_bytes(drain_rate: float | None, batch_bytes: int) -> int:
    """Bytes to gather before one sendmsg: about SEND_SECONDS of the link, whole frames."""
    if drain_rate is None or drain_rate <= 0:
        target = 4 * MIN_SEND_BYTES  # unknown (not held back by the link): the old default
    else:
        target = int(drain_rate * SEND_SECONDS)
    return max(MIN_SEND_BYTES, min(MAX_SEND_BYTES, target), batch_bytes)


def buffer_floor(drain_rate: float, rtt_seconds: float, cap: int) -> int:
    """The smallest send/receive buffer that keeps `BDP_FACTOR` bandwidth-delay products."""
    bdp = drain_rate * max(rtt_seconds, 0.0)
    return int(min(cap, max(AUTO_FLOOR_BYTES, BDP_FACTOR * bdp)))


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's send queue (SIOCOUTQ); 0 where the kernel does not say."""
    try:
        value = fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(value, "little", signed=True)


def rtt_seconds(sock: socket.socket) -> float:
    """The kernel's smoothed round-trip time of the connection (TCP_INFO)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except OSError:
        return 0.0
    if len(info) < _TCP_INFO_RTT_OFFSET + 4:
        return 0.0
    microseconds: int = _TCP_INFO_RTT.unpack_from(info, _TCP_INFO_RTT_OFFSET)[0]
    return microseconds / 1e6
