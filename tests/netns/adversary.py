"""Attackers for the data-plane tests, run inside a test namespace as their own process.

    adversary.py relay LISTEN_PORT TARGET_HOST:PORT MODE SECONDS
        MODE forward: copy bytes both ways.
        MODE tamper: after the first 4 KiB a sender writes, connection k flips a byte
        (k % 3 == 0), swallows one write of the sender and forwards the rest (1), or
        injects a forged frame (2).
    adversary.py trickle TARGET_HOST:PORT COUNT SECONDS
        COUNT connections that write one byte a second; prints one JSON line: for each
        connection, the seconds until the worker closed it (null if it never did).
    adversary.py partial TARGET_HOST:PORT COUNT SECONDS CERT KEY CA NAME CLUSTER HEXKEY BATCH
        COUNT connections of a cluster member (a valid certificate and the key) that each
        send the start of one frame of BATCH bytes, then nothing; prints the seconds
        until each was closed.  With BATCH > the cluster's batchBytes, the frame is too big.

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
        kind = "forward" if mode == "forward" else ("flip", "swallow", "inject")[count % 3]
        count += 1
        threading.Thread(target=_pipe, args=(client, upstream, kind, deadline), daemon=True).start()
        threading.Thread(
            target=_pipe, args=(upstream, client, "forward", deadline), daemon=True
        ).start()
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
    socks: list[socket.socket], seconds: float, send_byte: bool
) -> list[float | None]:
    """Seconds until each socket saw EOF or a reset; writes a byte a second if asked."""
    started = time.monotonic()
    closed: list[float | None] = [None] * len(socks)
    selector = selectors.DefaultSelector()
    for index, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
    next_byte = started + 1.0
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
            next_byte += 1.0
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
            sock, me, stream=100 + stream, session=stream + 1, resume_from=0,
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
            sock.sendall(header + os.urandom(min(batch // 2, 1 << 20)))
        socks.append(sock)
    print(json.dumps({"opened": len(socks), "closed": _closed_after(socks, seconds, False)}))


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
        )
    else:
        raise SystemExit(f"unknown command {command}")
