"""Attackers for the data-plane tests, run inside a test namespace as their own process.

    adversary.py relay LISTEN_PORT TARGET_HOST:PORT MODE SECONDS
        MODE forward: copy bytes both ways.
        MODE tamper: after the first 4 KiB a sender writes, connection k flips a byte
        (k % 3 == 0), swallows one write of the sender and forwards the rest (1), or
        injects a forged frame (2).
        MODE ackflip: the first two connections have a byte flipped after the first
        4 KiB the receiver writes (its ACKs); the rest are forwarded.
    adversary.py trickle TARGET_HOST:PORT COUNT SECONDS
        COUNT connections that write one byte a second; prints one JSON line: for each
        connection, the seconds until the worker closed it (null if it never did).
    adversary.py partial TARGET_HOST:PORT COUNT SECONDS CERT KEY CA NAME CLUSTER HEXKEY BATCH
            [FILL [EVERY]]
        COUNT connections of a cluster member (a valid certificate and the key) on stream
        indices 0..COUNT-1 that each send the start of one frame of BATCH bytes (FILL
        bytes of it, default half of it up to 1 MiB), then nothing, or one more byte
        every EVERY seconds; prints the seconds until each was closed.  With BATCH > the
        cluster's batchBytes, the frame is too big.

    adversary.py flood TARGET_HOST:PORT COUNT SECONDS
        COUNT connections without a certificate, each sending a TLS ClientHello and then
        nothing, reopened as soon as the worker closes it; prints how many were opened.
    adversary.py member TARGET_HOST:PORT SOURCE_ADDRESS INTERVAL SECONDS CERT KEY CA NAME
            CLUSTER HEXKEY
        A cluster member's handshake from SOURCE_ADDRESS every INTERVAL seconds; prints
        how many were tried and how many succeeded (each within the 5 s deadline).

    adversary.py httpflood TARGET_HOST:PORT COUNT SECONDS
        COUNT connections to the metrics port, each sending the start of a request and
        then nothing, reopened as soon as the worker closes it.
    adversary.py probe URL INTERVAL SECONDS TIMEOUT [HEXKEY]
        GET URL every INTERVAL seconds, each within TIMEOUT (as the kubelet probes; with
        HEXKEY signed as the operator signs its pulls); prints how many answered 200.

Every mode ends after SECONDS, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

HANDSHAKE_ALLOWANCE = 4096


def relay(listen_port: int, target: str, mode: str, seconds: float) -> None:
    host, port = target.rsplit(":", 1)
    server = socket.create_server(("0.0.0.0", listen_port), reuse_port=True)
    server.settimeout(0.2)
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        try:
            client, _ = server.accept()
        except TimeoutError:
            continue
        try:
            upstream = socket.create_connection((host, int(port)), timeout=3)
        except OSError:
            client.close()
            continue
        if mode == "ackflip":  # the receiver -> sender direction (ACKs) is tampered with
            kind, back = "forward", ("flip" if count < 2 else "forward")
        else:
            kind = "forward" if mode == "forward" else ("flip", "swallow", "inject")[count % 3]
            back = "forward"
        count += 1
        threading.Thread(target=_pipe, args=(client, upstream, kind, deadline), daemon=True).start()
        threading.Thread(target=_pipe, args=(upstream, client, back, deadline), daemon=True).start()
    server.close()


def _pipe(source: socket.socket, sink: socket.socket, kind: str, deadline: float) -> None:
    passed = 0
    tampered = False
    source.settimeout(0.5)
    try:
        while time.monotonic() < deadline:
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            if kind != "forward" and passed >= HANDSHAKE_ALLOWANCE and not tampered:
                if kind == "flip":
                    data = bytes((data[0] ^ 0x40,)) + data[1:]
                    tampered = True
                elif kind == "swallow":
                    # Drop what the sender wrote just now, keep forwarding what follows.
                    passed += len(data)
                    tampered = True
                    continue
                elif kind == "inject":
                    # A well-formed DATA frame header and payload, in the clear.
                    forged = bytes((1, 0, 0, 0)) + (10**6).to_bytes(8, "little")
                    forged += (5).to_bytes(4, "little") * 2 + bytes(4) + b"forge"
                    sink.sendall(forged)
                    tampered = True
            passed += len(data)
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _closed_after(
    socks: list[socket.socket], seconds: float, send_byte: bool, every: float = 1.0
) -> list[float | None]:
    """Seconds until each socket saw EOF or a reset; writes a byte every `every` s if asked."""
    started = time.monotonic()
    closed: list[float | None] = [None] * len(socks)
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
    next_byte = started + every
    while time.monotonic() - started < seconds and any(c is None for c in closed):
        for key, _ in selector.select(0.1):
            index = key.data
            try:
                data = socks[index].recv(4096)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
            except OSError:
                data = b""
            if not data:
                closed[index] = round(time.monotonic() - started, 3)
                selector.unregister(socks[index])
        if send_byte and time.monotonic() >= next_byte:
            next_byte += every
            for index, sock in enumerate(socks):
                if closed[index] is None:
                    with contextlib.suppress(OSError):
                        sock.send(b"\x16")
    return closed


def trickle(target: str, count: int, seconds: float) -> None:
    host, port = target.rsplit(":", 1)
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection((host, int(port)), timeout=3))
        except OSError:
            continue
    print(json.dumps({"opened": len(socks), "closed": _closed_after(socks, seconds, True)}))


def partial(
    target: str,
    count: int,
    seconds: float,
    certificate: str,
    key: str,
    ca: str,
    name: str,
    cluster: str,
    hex_key: str,
    batch: int,
    fill: int = 0,
    every: float = 0.0,
) -> None:
    from w5xde.worker import protocol
    from w5xde.worker.handshake import Identity, client_handshake
    from w5xde.worker.tls import TlsIdentity

    tls = TlsIdentity.from_files(name, Path(certificate), Path(key), Path(ca))
    me = Identity(cluster, name, hex_key.encode(), tls)
    host, port = target.rsplit(":", 1)
    socks = []
    for stream in range(count):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock = client_handshake(
            sock, me, stream=stream, session=stream + 1, resume_from=0,
            context=protocol.Context.STREAM,
        )  # fmt: skip
        header = protocol.pack_header(
            protocol.FrameType.DATA,
            protocol.CodecId.NONE,
            sequence=0,
            raw_length=batch,
            payload_length=batch,
        )
        # A frame over the limit may be refused before it is all written: closed at once.
        with contextlib.suppress(OSError):
            sock.sendall(header + os.urandom(fill or min(batch // 2, 1 << 20)))
        socks.append(sock)
    closed = _closed_after(socks, seconds, every > 0, every or 1.0)
    print(json.dumps({"opened": len(socks), "closed": closed}))


def client_hello() -> bytes:
    """The first flight of a TLS client that has no certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def flood(target: str, count: int, seconds: float) -> None:
    host, port = target.rsplit(":", 1)
    address = (host, int(port))
    hello = client_hello()
    selector = selectors.DefaultSelector()
    opened = 0

    def open_one() -> None:
        nonlocal opened
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(address)
        selector.register(sock, selectors.EVENT_WRITE, "connecting")
        opened += 1

    started = time.monotonic()
    for _ in range(count):
        open_one()
    while time.monotonic() - started < seconds:
        for key, _ in selector.select(0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            alive = True
            try:
                if key.data == "connecting":
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        alive = False
                    else:
                        sock.send(hello)
                        selector.modify(sock, selectors.EVENT_READ, "waiting")
                else:
                    alive = bool(sock.recv(65536))  # the server's flight, then its close
            except OSError:
                alive = False
            if not alive:
                selector.unregister(sock)
                sock.close()
                open_one()
    elapsed = time.monotonic() - started
    print(json.dumps({"opened": opened, "perSecond": round(opened / elapsed, 1)}))


def httpflood(target: str, count: int, seconds: float) -> None:
    host, port = target.rsplit(":", 1)
    address = (host, int(port))
    selector = selectors.DefaultSelector()
    opened = 0

    def open_one() -> None:
        nonlocal opened
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(address)
        selector.register(sock, selectors.EVENT_WRITE, "connecting")
        opened += 1

    started = time.monotonic()
    for _ in range(count):
        open_one()
    while time.monotonic() - started < seconds:
        for key, _ in selector.select(0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            alive = True
            try:
                if key.data == "connecting":
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        alive = False
                    else:
                        sock.send(b"GET /metrics HTTP/1.1\r\nHost: w5xde\r\n")
                        selector.modify(sock, selectors.EVENT_READ, "waiting")
                else:
                    alive = bool(sock.recv(65536))
            except OSError:
                alive = False
            if not alive:
                selector.unregister(sock)
                sock.close()
                open_one()
    elapsed = time.monotonic() - started
    print(json.dumps({"opened": opened, "perSecond": round(opened / elapsed, 1)}))


def probe(url: str, interval: float, seconds: float, timeout: float, hex_key: str = "") -> None:
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    from w5xde.contract import auth

    started = time.monotonic()
    tried = answered = 0
    failures: list[str] = []
    while time.monotonic() - started < seconds:
        began = time.monotonic()
        tried += 1
        request = urllib.request.Request(url)
        if hex_key:
            key = auth.report_key(hex_key.encode())
            target = urlsplit(url).path
            request.add_header(
                auth.AUTHORIZATION_HEADER,
                auth.authorization(key, "GET", target, time.time(), auth.new_nonce()),
            )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
                answered += response.status == 200
        except (OSError, urllib.error.URLError) as error:
            failures.append(f"{round(began - started, 2)}: {error}")
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    print(json.dumps({"tried": tried, "answered": answered, "failures": failures[:10]}))


def member(
    target: str,
    source: str,
    interval: float,
    seconds: float,
    certificate: str,
    key: str,
    ca: str,
    name: str,
    cluster: str,
    hex_key: str,
) -> None:
    from w5xde.worker import protocol
    from w5xde.worker.handshake import Identity, client_handshake
    from w5xde.worker.protocol import ProtocolError
    from w5xde.worker.tls import TlsIdentity

    tls = TlsIdentity.from_files(name, Path(certificate), Path(key), Path(ca))
    me = Identity(cluster, name, hex_key.encode(), tls)
    host, port = target.rsplit(":", 1)
    started = time.monotonic()
    tried = succeeded = 0
    took: list[float] = []
    while time.monotonic() - started < seconds:
        began = time.monotonic()
        tried += 1
        try:
            sock = socket.create_connection(
                (host, int(port)), timeout=5, source_address=(source, 0)
            )
            try:
                proven = client_handshake(
                    sock, me, stream=0, session=tried, resume_from=0,
                    context=protocol.Context.STREAM,
                )  # fmt: skip
                proven.close()
                succeeded += 1
                took.append(round(time.monotonic() - began, 3))
            finally:
                sock.close()
        except (OSError, ProtocolError) as error:
            print(f"attempt {tried}: {error}", file=sys.stderr)
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    print(json.dumps({"tried": tried, "succeeded": succeeded, "seconds": took}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "relay":
        relay(int(args[0]), args[1], args[2], float(args[3]))
    elif command == "trickle":
        trickle(args[0], int(args[1]), float(args[2]))
    elif command == "partial":
        partial(
            args[0],
            int(args[1]),
            float(args[2]),
            *args[3:9],
            int(args[9]),  # type: ignore[arg-type]
            *(int(args[10]),) if len(args) > 10 else (),
            *(float(args[11]),) if len(args) > 11 else (),
        )
    elif command == "flood":
        flood(args[0], int(args[1]), float(args[2]))
    elif command == "httpflood":
        httpflood(args[0], int(args[1]), float(args[2]))
    elif command == "probe":
        probe(args[0], float(args[1]), float(args[2]), float(args[3]), *args[4:5])
    elif command == "member":
        member(args[0], args[1], float(args[2]), float(args[3]), *args[4:10])  # type: ignore[arg-type]
    else:
        raise SystemExit(f"unknown command {command}")
