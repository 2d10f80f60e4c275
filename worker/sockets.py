"""Socket tuning: buffer sizes set and read back, TCP_NODELAY, TCP_QUICKACK, user timeout."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

from w5xde.api.v1alpha1 import NetworkSpec

#: A peer that has not acknowledged anything for this long is treated as gone, so a dead
#: link ends in a reconnect and a replay instead of a stream that hangs forever.
USER_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True)
class BufferSizes:
    """What was asked for and what the kernel granted (it doubles and caps at *mem_max)."""

    requested: int
    send: int
    receive: int


def tune(sock: socket.socket, network: NetworkSpec) -> BufferSizes:
    """Apply the spec's tuning; buffers must be set before connect/listen to take effect."""
    fixed = network.fixed_buffer_bytes  # 0 and auto keep autotuning (auto: stream_tuning.py)
    if fixed > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, fixed)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, fixed)
    if network.tcp_no_delay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return read_buffer_sizes(sock, fixed)


def read_buffer_sizes(sock: socket.socket, requested: int) -> BufferSizes:
    return BufferSizes(
        requested=requested,
        send=sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        receive=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    )


def rearm_quickack(sock: socket.socket) -> None:
    """The kernel clears TCP_QUICKACK after a while, so it is set again after every receive."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def interrupt(sock: socket.socket) -> None:
    """Shut a socket down from another thread, so the thread blocked on it returns.

    On a TLS socket this must be the plain socket's shutdown: `SSLSocket.shutdown`
    also drops its TLS state, and the thread still using it would then read the
    encrypted bytes as data, or send its frames in the clear.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
