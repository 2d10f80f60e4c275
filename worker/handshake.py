"""The handshake over a connected socket: mutual TLS, then a mutual HMAC proof of the key.

With TLS (the default) every byte after connect is encrypted and authenticated, both
sides present a certificate of the cluster CA, and the receiver takes the sender's
name from its certificate: a relay can neither read, change, drop nor inject a frame
without breaking the connection, and no worker can speak for another.  The HMAC proof
of the cluster key follows either way, so `tls: false` still refuses keyless peers.

A handshake has one deadline for all its steps (`HANDSHAKE_TIMEOUT_S` from accept),
so a peer trickling bytes cannot hold it open longer.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import socket
import ssl
import time
from dataclasses import dataclass

from w5xde.worker import protocol
from w5xde.worker.keyring import KeyRing
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
from w5xde.worker.tls import TlsIdentity, peer_name
from w5xde.worker.tls_channel import TlsChannel

HANDSHAKE_TIMEOUT_S = 5.0


def recv_exact(sock: socket.socket, count: int, deadline: float | None = None) -> bytes:
    """Exactly `count` bytes, or ProtocolError when the peer closes first or is too slow."""
    data = bytearray()
    while len(data) < count:
        if deadline is not None:
            _time_left(sock, deadline)
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ProtocolError(f"peer closed during handshake after {len(data)} of {count} bytes")
        data += chunk
    return bytes(data)


def _time_left(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise HandshakeTimeoutError()
    sock.settimeout(remaining)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this side is, which key it proves, and its certificate (None: TLS off)."""

    cluster_id: str
    name: str
    key: bytes
    tls: TlsIdentity | None = None
    #: With it, `key` is only the key at start: the ring has the current ones.
    keyring: KeyRing | None = None

    def own_key(self, attempt: int = 0) -> bytes:
        """The key to prove with; a sender refused during a rotation tries the other one
        next (the peer may have read the new key files before or after this worker)."""
        if self.keyring is None:
            return self.key
        keys = self.keyring.accepted
        proving = self.keyring.proving
        ordered = (proving, *(key for key in keys if key != proving))
        return ordered[attempt % len(ordered)]

    def accepted_keys(self) -> tuple[bytes, ...]:
        return self.keyring.accepted if self.keyring is not None else (self.key,)


class HandshakeTimeoutError(ProtocolError):
    """The peer did not finish the handshake within its one deadline."""

    def __init__(self) -> None:
        super().__init__(f"handshake not done within {HANDSHAKE_TIMEOUT_S:g} s")


class NotEnrolledError(ProtocolError):
    """TLS is on and this worker has no certificate yet (the operator has not signed it)."""


def expected_peer(host: str) -> str | None:
    """The worker name a peer address stands for: the first label of a DNS name."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return host.split(".", 1)[0]
    return None  # an address: the certificate's CA is all that can be checked


def _secure(sock: socket.socket, me: Identity, *, server: bool, deadline: float) -> socket.socket:
    """Wrap in TLS under the deadline; the plain socket when TLS is off."""
    if me.tls is None:
        return sock
    contexts = me.tls.contexts
    if contexts is None:
        raise NotEnrolledError("no certificate yet: waiting for the operator to sign this worker's")
    context = contexts.server if server else contexts.client
    secured = TlsChannel(sock, context, server_side=server)
    try:
        secured.handshake(deadline)
    except ConnectionResetError as error:
        secured.close()
        raise ProtocolError(f"TLS handshake failed: {error}") from None
    except ssl.SSLError as error:
        secured.close()
        raise ProtocolError(f"TLS handshake failed: {error.reason or error}") from None
    except BaseException:
        secured.close()
        raise
    return secured


def client_handshake(
    sock: socket.socket,
    me: Identity,
    *,
    stream: int,
    session: int,
    resume_from: int,
    peer: str | None = None,
    attempt: int = 0,
    context: protocol.Context = protocol.Context.FRAME,
) -> socket.socket:
    """Introduce a sender stream; returns the (TLS) socket once both sides are proven.

    `peer` is the worker name the sender means to reach; with TLS the receiver's
    certificate must carry it.  `context` is the sender's `compression.context` (a
    `frame` sender introduces itself as v2, so v2 receivers accept it).
    """
    version = protocol.hello_version(context)
    hello = Hello(
        me.cluster_id,
        me.name,
        stream,
        session,
        os.urandom(NONCE_BYTES),
        resume_from=resume_from,
        version=version,
        context=context,
    ).encode()
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    try:
        sock = _secure(sock, me, server=False, deadline=deadline)
        if isinstance(sock, TlsChannel) and peer is not None and peer_name(sock) != peer:
            raise ProtocolError(f"peer's certificate names {peer_name(sock)!r}, not {peer!r}")
        _time_left(sock, deadline)
        sock.sendall(hello)
        welcome_bytes = recv_exact(sock, WELCOME_BYTES, deadline)
        welcome = protocol.decode_welcome(welcome_bytes)
        if welcome.status == HandshakeStatus.WRONG_CONTEXT:
            raise ProtocolError(
                "peer refused the handshake: WRONG_CONTEXT (its compression.context is not "
                f"this worker's {context.field!r})"
            )
        if welcome.status != HandshakeStatus.OK:
            raise ProtocolError(f"peer refused the handshake: {welcome.status.name}")
        if welcome.version != version:
            raise ProtocolError(f"peer speaks protocol version {welcome.version}")
        _time_left(sock, deadline)
        sock.sendall(protocol.proof(me.own_key(attempt), CLIENT_ROLE, hello, welcome_bytes))
        server_proof = recv_exact(sock, PROOF_BYTES, deadline)
        _matching_key(me, SERVER_ROLE, hello, welcome_bytes, server_proof)
    except BaseException as error:
        if isinstance(sock, TlsChannel):  # the caller holds only the plain socket
            sock.close()
        if isinstance(error, TimeoutError):
            raise HandshakeTimeoutError() from None
        raise
    finally:
        with contextlib.suppress(OSError):  # closed, or detached into a TLS socket
            sock.settimeout(None)
    return sock


def _matching_key(me: Identity, role: bytes, hello: bytes, welcome: bytes, proof: bytes) -> bytes:
    """The accepted key the peer's proof was made with; ProtocolError if none."""
    keys = me.accepted_keys()
    for key in keys[:-1]:
        if hmac.compare_digest(protocol.proof(key, role, hello, welcome), proof):
            return key
    protocol.verify_proof(protocol.proof(keys[-1], role, hello, welcome), proof)
    return keys[-1]


@dataclass(frozen=True, slots=True)
class Accepted:
    """A proven incoming stream: the socket to read (TLS or not) and who sends on it."""

    sock: socket.socket
    hello: Hello


def server_handshake(
    sock: socket.socket,
    me: Identity,
    *,
    deadline: float | None = None,
    context: protocol.Context = protocol.Context.FRAME,
) -> Accepted:
    """Check an incoming stream's certificate, introduction and key, all by `deadline`.

    With TLS the Hello must name the sender its certificate names, so the returned
    Hello's sender is the certificate's.  A sender whose `compression.context` is not
    `context` is refused (a v2 sender means `frame`; it is told WRONG_VERSION, the
    status it knows).
    """
    if deadline is None:
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    try:
        sock = _secure(sock, me, server=True, deadline=deadline)
        certified = peer_name(sock) if isinstance(sock, TlsChannel) else None
        # Fixed part, then each length-prefixed name: at most 2 x 255 bytes beyond it.
        hello_bytes = recv_exact(sock, protocol.HELLO_FIXED_BYTES + 1, deadline)
        if hello_bytes[:4] != protocol.MAGIC:
            raise ProtocolError("bad magic: not a w5xde peer")
        hello_bytes += recv_exact(sock, hello_bytes[-1] + 1, deadline)
        version = int.from_bytes(hello_bytes[4:6], "little")
        tail = protocol.hello_tail_bytes(version)
        hello_bytes += recv_exact(sock, hello_bytes[-1] + tail, deadline)
        hello = protocol.decode_hello(hello_bytes)
        status = HandshakeStatus.OK
        if hello.version not in protocol.VERSIONS:
            status = HandshakeStatus.WRONG_VERSION
        elif hello.cluster_id != me.cluster_id:
            status = HandshakeStatus.WRONG_CLUSTER
        elif certified is not None and hello.sender != certified:
            status = HandshakeStatus.WRONG_IDENTITY
        elif hello.context != context:
            status = HandshakeStatus.WRONG_CONTEXT
        answered = status
        if status == HandshakeStatus.WRONG_CONTEXT and hello.version == protocol.FRAME_ONLY_VERSION:
            answered = HandshakeStatus.WRONG_VERSION  # a v2 peer knows no WRONG_CONTEXT
        welcome_version = hello.version if hello.version in protocol.VERSIONS else protocol.VERSION
        welcome_bytes = Welcome(answered, os.urandom(NONCE_BYTES), welcome_version).encode()
        _time_left(sock, deadline)
        sock.sendall(welcome_bytes)
        if status == HandshakeStatus.WRONG_CONTEXT:
            raise ProtocolError(
                f"refused {hello.sender!r}: WRONG_CONTEXT (compression.context: the sender's is "
                f"{hello.context.field!r} (protocol v{hello.version}), this worker's "
                f"{context.field!r})"
            )
        if status != HandshakeStatus.OK:
            raise ProtocolError(
                f"refused {hello.sender!r}: {status.name} (version {hello.version}, "
                f"cluster {hello.cluster_id!r}, certificate {certified!r})"
            )
        client_proof = recv_exact(sock, PROOF_BYTES, deadline)
        key = _matching_key(me, CLIENT_ROLE, hello_bytes, welcome_bytes, client_proof)
        _time_left(sock, deadline)
        # Answered with the key the peer used: during a rotation both ends may differ.
        sock.sendall(protocol.proof(key, SERVER_ROLE, hello_bytes, welcome_bytes))
        return Accepted(sock, hello)
    except BaseException as error:
        if isinstance(sock, TlsChannel):  # the caller holds only the plain socket
            sock.close()
        if isinstance(error, TimeoutError):
            raise HandshakeTimeoutError() from None
        raise
    finally:
        with contextlib.suppress(OSError):  # closed, or detached into a TLS socket
            sock.settimeout(None)
