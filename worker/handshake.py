"""The v1 handshake over a connected socket: mutual HMAC proof of the cluster key.

Both sides prove the key, so a sender never streams to an impostor and a receiver
never accepts a single data byte from a peer without the key.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from w5xde.worker import protocol
from w5xde.worker.protocol import (
    CLIENT_ROLE,
    NONCE_BYTES,
    PROOF_BYTES,
    SERVER_ROLE,
    WELCOME_BYTES,
    HandshakeStatus,
    Hello,
    ProtocolError,
    Welcome,
)

HANDSHAKE_TIMEOUT_S = 5.0


def recv_exact(sock: socket.socket, count: int) -> bytes:
    """Exactly `count` bytes, or ProtocolError when the peer closes first."""
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ProtocolError(f"peer closed during handshake after {len(data)} of {count} bytes")
        data += chunk
    return bytes(data)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this side is and which key it proves."""

    cluster_id: str
    name: str
    key: bytes


def client_handshake(
    sock: socket.socket, me: Identity, *, stream: int, session: int, resume_from: int
) -> None:
    """Introduce a sender stream; returns once both sides have proven the key."""
    hello = Hello(
        me.cluster_id, me.name, stream, session, os.urandom(NONCE_BYTES), resume_from=resume_from
    ).encode()
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    try:
        sock.sendall(hello)
        welcome_bytes = recv_exact(sock, WELCOME_BYTES)
        welcome = protocol.decode_welcome(welcome_bytes)
        if welcome.status != HandshakeStatus.OK:
            raise ProtocolError(f"peer refused the handshake: {welcome.status.name}")
        if welcome.version != protocol.VERSION:
            raise ProtocolError(f"peer speaks protocol version {welcome.version}")
        sock.sendall(protocol.proof(me.key, CLIENT_ROLE, hello, welcome_bytes))
        server_proof = recv_exact(sock, PROOF_BYTES)
        protocol.verify_proof(
            protocol.proof(me.key, SERVER_ROLE, hello, welcome_bytes), server_proof
        )
    except TimeoutError:
        raise ProtocolError("handshake timed out") from None
    finally:
        sock.settimeout(None)


def server_handshake(sock: socket.socket, me: Identity) -> Hello:
    """Check an incoming stream's introduction and key; the Hello says who it is."""
    sock.settimeout(HANDSHAKE_TIMEOUT_S)
    try:
        # Fixed part, then each length-prefixed name: at most 2 x 255 bytes beyond it.
        hello_bytes = recv_exact(sock, protocol.HELLO_FIXED_BYTES + 1)
        if hello_bytes[:4] != protocol.MAGIC:
            raise ProtocolError("bad magic: not a w5xde peer")
        hello_bytes += recv_exact(sock, hello_bytes[-1] + 1)
        hello_bytes += recv_exact(sock, hello_bytes[-1])
        hello = protocol.decode_hello(hello_bytes)
        status = HandshakeStatus.OK
        if hello.version != protocol.VERSION:
            status = HandshakeStatus.WRONG_VERSION
        elif hello.cluster_id != me.cluster_id:
            status = HandshakeStatus.WRONG_CLUSTER
        welcome_bytes = Welcome(status, os.urandom(NONCE_BYTES)).encode()
        sock.sendall(welcome_bytes)
        if status != HandshakeStatus.OK:
            raise ProtocolError(
                f"refused {hello.sender!r}: {status.name} (version {hello.version}, "
                f"cluster {hello.cluster_id!r})"
            )
        client_proof = recv_exact(sock, PROOF_BYTES)
        protocol.verify_proof(
            protocol.proof(me.key, CLIENT_ROLE, hello_bytes, welcome_bytes), client_proof
        )
        sock.sendall(protocol.proof(me.key, SERVER_ROLE, hello_bytes, welcome_bytes))
        return hello
    except TimeoutError:
        raise ProtocolError("handshake timed out") from None
    finally:
        sock.settimeout(None)
