"""The v1 handshake over real connected sockets: key, version, cluster and garbage."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import pytest

from w5xde.worker import protocol
from w5xde.worker.handshake import Identity, client_handshake, server_handshake
from w5xde.worker.protocol import Hello, ProtocolError

KEY = b"k" * 32
SERVER = Identity("cluster-a", "receiver-0", KEY)


def run_server(sock: socket.socket) -> Callable[[], Hello | ProtocolError]:
    result: list[Hello | ProtocolError] = []

    def serve() -> None:
        try:
            result.append(server_handshake(sock, SERVER).hello)
        except ProtocolError as error:
            result.append(error)
        finally:
            sock.close()

    thread = threading.Thread(target=serve)
    thread.start()

    def outcome() -> Hello | ProtocolError:
        thread.join(10)
        assert not thread.is_alive(), "the server side of the handshake never returned"
        (found,) = result
        return found

    return outcome


def test_matching_keys_complete_and_carry_the_identity() -> None:
    client, server = socket.socketpair()
    outcome = run_server(server)
    client_handshake(
        client, Identity("cluster-a", "sender-1", KEY), stream=3, session=42, resume_from=17
    )
    hello = outcome()
    assert isinstance(hello, Hello)
    assert (hello.sender, hello.stream, hello.session, hello.resume_from) == ("sender-1", 3, 42, 17)
    client.close()


def test_wrong_key_is_refused_on_both_sides() -> None:
    client, server = socket.socketpair()
    outcome = run_server(server)
    with pytest.raises(ProtocolError):
        client_handshake(
            client, Identity("cluster-a", "intruder", b"x" * 32), stream=0, session=1, resume_from=0
        )
    error = outcome()
    assert isinstance(error, ProtocolError)
    assert "cluster key" in str(error)
    client.close()


def test_a_server_without_the_key_is_not_trusted_by_the_client() -> None:
    client, server = socket.socketpair()
    seen: list[Hello] = []

    def impostor() -> None:
        # No asserts here: what the impostor saw is checked in the test's own thread.
        seen.append(protocol.decode_hello(server.recv(4096)))
        welcome = protocol.Welcome(
            protocol.HandshakeStatus.OK, os.urandom(16), seen[-1].version
        ).encode()
        server.sendall(welcome)
        server.recv(32)
        server.sendall(os.urandom(32))

    thread = threading.Thread(target=impostor)
    thread.start()
    with pytest.raises(ProtocolError, match="cluster key"):
        client_handshake(
            client, Identity("cluster-a", "sender-1", KEY), stream=0, session=1, resume_from=0
        )
    thread.join(5)
    assert not thread.is_alive()
    client.close()
    server.close()
    # The impostor got as far as the proof: the client refused on the proof alone.
    assert [hello.sender for hello in seen] == ["sender-1"]


def test_wrong_version_and_wrong_cluster_are_refused_with_a_reason() -> None:
    for hello, reason in (
        (Hello("cluster-a", "old", 0, 1, os.urandom(16), version=9), "WRONG_VERSION"),
        (Hello("cluster-b", "other", 0, 1, os.urandom(16)), "WRONG_CLUSTER"),
    ):
        client, server = socket.socketpair()
        outcome = run_server(server)
        client.sendall(hello.encode())
        welcome = protocol.decode_welcome(client.recv(4096))
        assert welcome.status.name == reason
        error = outcome()
        assert isinstance(error, ProtocolError)
        assert reason in str(error)
        client.close()


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\n\r\n" + b"x" * 40, b"\x00" * 60, os.urandom(300)],
)
def test_garbage_is_refused_before_anything_else(garbage: bytes) -> None:
    client, server = socket.socketpair()
    outcome = run_server(server)
    client.sendall(garbage)
    client.shutdown(socket.SHUT_WR)
    assert isinstance(outcome(), ProtocolError)
    client.close()


def test_a_silent_peer_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("w5xde.worker.handshake.HANDSHAKE_TIMEOUT_S", 0.2)
    client, server = socket.socketpair()
    outcome = run_server(server)
    error = outcome()
    assert isinstance(error, ProtocolError)
    assert "not done within 0.2 s" in str(error)
    client.close()


def test_a_trickling_peer_is_cut_at_the_deadline_of_the_whole_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One byte every 50 ms never trips a per-receive timeout; the handshake's deadline must."""
    monkeypatch.setattr("w5xde.worker.handshake.HANDSHAKE_TIMEOUT_S", 0.3)
    client, server = socket.socketpair()
    hello = Hello("cluster-a", "sender-1", 0, 1, os.urandom(16)).encode()
    stop = threading.Event()

    def trickle() -> None:
        for byte in hello:
            if stop.wait(0.05):
                return
            try:
                client.send(bytes((byte,)))
            except OSError:
                return

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    outcome = run_server(server)
    error = outcome()
    stop.set()
    sender.join()
    assert isinstance(error, ProtocolError)
    assert "not done within 0.3 s" in str(error)
    client.close()
