"""Issue 12 on real workers over loopback: credits on the wire, per-link figures.

No timing assertions: only what crossed the socket and what the report says.
"""

from __future__ import annotations

import os
import socket
import urllib.request
import zlib
from collections.abc import Callable

import pytest

from unit.loopback import FRAME_CONTEXT, KEY, wait_for
from w5xde.worker import protocol
from w5xde.worker.credits import credit_window
from w5xde.worker.handshake import Identity, client_handshake
from w5xde.worker.level_policy import LADDER
from w5xde.worker.metrics import MetricsServer
from w5xde.worker.protocol import HEADER_BYTES, CodecId, FrameDecoder, FrameType
from w5xde.worker.runtime import Worker


def _raw_frame(sequence: int, flags: int) -> bytes:
    batch = b"%d" % sequence * 100
    header = protocol.pack_header(
        FrameType.DATA,
        CodecId.NONE,
        sequence=sequence,
        raw_length=len(batch),
        payload_length=len(batch),
        crc32=zlib.crc32(batch),
        flags=flags,
    )
    return header + batch


def _acks(port: int, frames: list[bytes], last: int) -> list[protocol.FrameHeader]:
    sock = socket.create_connection(("127.0.0.1", port))
    session = int.from_bytes(os.urandom(8), "little")
    client_handshake(
        sock, Identity("unit", "credit-test", KEY), stream=0, session=session, resume_from=0
    )
    sock.sendall(b"".join(frames))
    decoder = FrameDecoder()
    headers: list[protocol.FrameHeader] = []
    sock.settimeout(5)
    while not headers or headers[-1].sequence < last:
        headers += [frame.header for frame in decoder.feed(sock.recv(HEADER_BYTES * 16))]
    sock.sendall(protocol.close_frame())
    sock.close()
    return headers


def test_a_receiver_grants_credit_only_to_a_sender_that_asks(
    workers: Callable[..., list[Worker]],
) -> None:
    (receiver,) = workers(1, compression=FRAME_CONTEXT)
    port = receiver.config.listen_port()
    plain = _acks(port, [_raw_frame(n, 0) for n in range(4)], last=3)
    assert all(header.flags == 0 and header.raw_length == 0 for header in plain)
    asking = _acks(port, [_raw_frame(n, protocol.FLAG_WANTS_CREDIT) for n in range(4)], last=3)
    assert all(header.flags == protocol.FLAG_CREDIT for header in asking)
    assert {header.raw_length for header in asking} == {credit_window(16384, 262144)}
    # Raw-fallback frames are ordinary verified batches.
    _acks(port, [_raw_frame(n, protocol.FLAG_RAW_FALLBACK) for n in range(4)], last=3)
    assert receiver.report().corrupt_batches == 0
    assert receiver.report().batches == 12


@pytest.mark.parametrize("balance", ["even", "capacity"])
def test_each_peer_s_share_level_and_raw_share_are_reported(
    workers: Callable[..., list[Worker]], balance: str
) -> None:
    first, second, third = workers(
        3,
        workload={"batchBytes": 16384, "topology": "all-to-all", "balance": balance},
        compression={"level": "auto"},
    )
    wait_for(lambda: all(link.sent_raw_bytes > 0 for link in first.link_tuning().values()))
    links = first.link_tuning()
    # Keyed by worker name, as the report's `links` and the metrics' `peer` label are.
    assert set(links) == {second.config.name, third.config.name}
    assert sum(link.share for link in links.values()) == pytest.approx(1.0, abs=0.01)
    for link in links.values():
        assert link.auto
        assert link.level in LADDER
        assert link.raw_batches + link.compressed_batches > 0
        assert link.raw_share == pytest.approx(
            link.raw_batches / (link.raw_batches + link.compressed_batches), abs=1e-3
        )
    assert set(first.report().link_tuning) == set(links)
    server = MetricsServer.for_worker(first, "127.0.0.1", 0)
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as got:
            text = got.read().decode()
    finally:
        server.stop()
    peer = next(iter(links))
    for name in (
        "w5xde_link_compression_level",
        "w5xde_link_raw_share_ratio",
        "w5xde_link_sent_share_ratio",
        "w5xde_link_raw_batches_total",
        "w5xde_link_compressed_batches_total",
        "w5xde_link_level_switches_total",
        "w5xde_link_sent_raw_bytes_total",
    ):
        assert f'{name}{{peer="{peer}"}}' in text, name


class _CountingWhileRead:
    """A stream whose thread sends between any two reads of its counter (what a busy
    stream does to a report built while it runs)."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._sent = 0
        from w5xde.worker.stream_tuning import LinkFigures

        figures = LinkFigures(
            level=1,
            auto=False,
            raw_batches=0,
            compressed_batches=1,
            level_switches=0,
            send_bytes=0,
            buffer_floor=0,
        )
        self.tuning = type("Tuning", (), {"figures": staticmethod(lambda: figures)})()
        self.counters = self

    @property
    def raw_bytes(self) -> int:
        self._sent += 65536
        return self._sent


def test_link_shares_come_from_one_reading_of_streams_that_keep_sending() -> None:
    """A share from a later reading over an earlier total came out above 1, failed the
    report's validation, and a 24-worker local run lost a worker at start."""
    from unit.loopback import worker_config
    from w5xde.local.run import free_ports

    ports = free_ports(3)
    worker = Worker(worker_config(0, ports), KEY)
    peers = [f"127.0.0.1:{port}" for port in ports[1:]]
    worker._streams = {(peer, 0): _CountingWhileRead(peer) for peer in peers}  # type: ignore[assignment]
    tuning = worker.link_tuning()
    assert len(tuning) == 2
    assert all(0 < link.share <= 1 for link in tuning.values())
    assert sum(link.share for link in tuning.values()) == pytest.approx(1.0, abs=1e-3)
