"""What TLS adds per byte: full records from coalesced frames, whole chunks per receive,
and AES-128-GCM chosen through OpenSSL's configuration (real TLS 1.3, real sockets)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from w5xde.local.run import issue_identities
from w5xde.worker import openssl_config
from w5xde.worker.tls import TlsIdentity
from w5xde.worker.tls_channel import RECORD_BYTES, TlsChannel

#: A TLS 1.3 record: 5-byte header; its body is the plaintext, the content type byte
#: and the 16-byte AEAD tag.
_RECORD_HEADER = 5
_RECORD_OVERHEAD = 17


def _identities(directory: Path) -> tuple[TlsIdentity, TlsIdentity]:
    sections = issue_identities(["w-0", "w-1"], directory)
    made = []
    for name in ("w-0", "w-1"):
        section = sections[name]
        made.append(
            TlsIdentity.from_files(
                name,
                Path(section["certificateFile"]),
                Path(section["keyFile"]),
                Path(section["caFile"]),
            )
        )
    return made[0], made[1]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[TlsChannel, TlsChannel]]:
    """A connected client/server TlsChannel pair over loopback TCP."""
    client_identity, server_identity = _identities(tmp_path)
    client_contexts, server_contexts = client_identity.contexts, server_identity.contexts
    assert client_contexts is not None
    assert server_contexts is not None
    with socket.create_server(("127.0.0.1", 0)) as listener:
        plain_client = socket.create_connection(listener.getsockname())
        plain_server, _ = listener.accept()
    client = TlsChannel(plain_client, client_contexts.client, server_side=False)
    server = TlsChannel(plain_server, server_contexts.server, server_side=True)
    thread = threading.Thread(target=server.handshake, args=(time.monotonic() + 10,))
    thread.start()
    client.handshake(time.monotonic() + 10)
    thread.join(10)
    yield client, server
    client.close()
    server.close()


def _records(ciphertext: bytes) -> list[int]:
    """The plaintext size of each application-data record in `ciphertext`."""
    sizes = []
    position = 0
    while position < len(ciphertext):
        length = int.from_bytes(ciphertext[position + 3 : position + 5], "big")
        sizes.append(length - _RECORD_OVERHEAD)
        position += _RECORD_HEADER + length
    assert position == len(ciphertext)
    return sizes


def _raw_read(channel: TlsChannel, count: int) -> bytes:
    """Ciphertext straight off the kernel socket (bypassing the channel's TLS)."""
    data = bytearray()
    channel.settimeout(10)
    while len(data) < count:
        data += socket.socket.recv(channel, count - len(data))
    return bytes(data)


@pytest.mark.parametrize("seed", range(4))
def test_coalesced_frames_go_out_as_full_records_and_arrive_intact(
    pair: tuple[TlsChannel, TlsChannel], seed: int
) -> None:
    client, server = pair
    rng = random.Random(seed)
    # What a flush queues: 24-byte headers and payloads of every size, small and large.
    buffers: list[bytes | memoryview] = []
    for _ in range(60):
        buffers.append(rng.randbytes(24))
        size = rng.choice((1, 1800, 3600, 16383, 16384, 16385, 40000, 65536, 70000))
        buffers.append(memoryview(rng.randbytes(size)))
    plaintext = b"".join(bytes(buffer) for buffer in buffers)
    # Ciphertext size is known once the records are: read it raw in one go.
    client.send_buffers(buffers)
    records = (len(plaintext) + RECORD_BYTES - 1) // RECORD_BYTES
    ciphertext = _raw_read(server, len(plaintext) + records * (_RECORD_HEADER + _RECORD_OVERHEAD))
    sizes = _records(ciphertext)
    # Every record full but the last: nothing is a record of its own for a header.
    assert sizes[:-1] == [RECORD_BYTES] * (len(sizes) - 1)
    assert sum(sizes) == len(plaintext)
    # And it decrypts to the frames, in order.
    server._incoming.write(ciphertext)
    received = bytearray()
    chunk = bytearray(65536)
    while len(received) < len(plaintext):
        count = server.recv_into(chunk)
        received += chunk[:count]
    assert bytes(received) == plaintext


def test_a_receive_fills_the_chunk_with_every_whole_record_buffered(
    pair: tuple[TlsChannel, TlsChannel],
) -> None:
    client, server = pair
    data = random.Random(7).randbytes(5 * RECORD_BYTES)
    client.sendall(data)
    chunk = bytearray(4 * RECORD_BYTES)
    server.settimeout(10)
    received = bytearray()
    counts = []
    while len(received) < len(data):
        count = server.recv_into(chunk)
        counts.append(count)
        received += chunk[:count]
    assert bytes(received) == data
    # Four records in the first receive (one chunk), not one per call.
    assert counts[0] == 4 * RECORD_BYTES or sum(counts[:2]) >= 4 * RECORD_BYTES
    assert len(counts) <= 3


def test_the_worker_process_negotiates_aes_128_gcm(tmp_path: Path) -> None:
    """`w5xde worker` points OpenSSL at its configuration before TLS is set up (with
    `hashlib` already loaded, by restarting itself): both ends then choose AES-128-GCM."""
    script = f"""
import hashlib, os, sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from w5xde.worker.openssl_config import prefer_aes128
prefer_aes128()
import socket, threading, time
from pathlib import Path
from unit.test_worker_tls_records import _identities
from w5xde.worker.tls_channel import TlsChannel
a, b = _identities(Path({str(tmp_path)!r}))
with socket.create_server(("127.0.0.1", 0)) as listener:
    c = socket.create_connection(listener.getsockname())
    s, _ = listener.accept()
client = TlsChannel(c, a.contexts.client, server_side=False)
server = TlsChannel(s, b.contexts.server, server_side=True)
t = threading.Thread(target=server.handshake, args=(time.monotonic() + 10,))
t.start()
client.handshake(time.monotonic() + 10)
t.join()
print(client.version(), client.cipher()[0], os.environ.get("OPENSSL_CONF", "-"))
"""
    env = {key: value for key, value in os.environ.items() if key != "OPENSSL_CONF"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    version, cipher, config = result.stdout.split()
    assert (version, cipher) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
    assert config == str(openssl_config.CONFIG_FILE)
    # Without it, OpenSSL's own default comes first (what the file changes).
    plain = subprocess.run(
        [sys.executable, "-c", script.replace("prefer_aes128()", "")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert plain.stdout.split()[1] == "TLS_AES_256_GCM_SHA384", plain.stderr


def test_tls_time_is_the_crypto_work_not_the_wait_for_the_peer(
    pair: tuple[TlsChannel, TlsChannel],
) -> None:
    """The CPU split's TLS share (docs/results.md) counts encrypting, decrypting and the
    copies through OpenSSL's buffers on both ends, never the time a read waits in the
    kernel for data that has not come yet."""
    client, server = pair
    data = random.Random(11).randbytes(8 * 1024 * 1024)
    server.settimeout(10)
    before_client, before_server = client.counters.tls_seconds, server.counters.tls_seconds

    def send_later() -> None:
        time.sleep(1.0)
        client.send_buffers([data])

    sender = threading.Thread(target=send_later)
    sender.start()
    began = time.perf_counter()
    received = 0
    chunk = bytearray(256 * 1024)
    while received < len(data):
        received += server.recv_into(chunk)
    waited = time.perf_counter() - began
    sender.join(10)
    client_tls = client.counters.tls_seconds - before_client
    server_tls = server.counters.tls_seconds - before_server
    assert waited >= 1.0
    # 8 MiB each way costs milliseconds of AES-GCM; a timer that kept the 1 s wait in
    # the kernel would count it all.
    assert 0 < client_tls < 0.5
    assert 0 < server_tls < 0.5
