"""The kernel's TCP facts of a connection (worker/tcp_info.py)."""

from __future__ import annotations

import socket
import struct

from w5xde.worker.tcp_info import TcpFacts, TcpLedger, parse, read


def test_the_struct_offsets_are_linux_tcp_info() -> None:
    data = bytearray(168)
    struct.pack_into("=I", data, 16, 1448)  # tcpi_snd_mss
    struct.pack_into("=I", data, 68, 2500)  # tcpi_rtt, microseconds
    struct.pack_into("=I", data, 80, 10)  # tcpi_snd_cwnd
    struct.pack_into("=I", data, 100, 7)  # tcpi_total_retrans
    struct.pack_into("=Q", data, 160, 125_000_000)  # tcpi_delivery_rate
    assert parse(bytes(data)) == TcpFacts(
        retransmitted_segments=7,
        cwnd_segments=10,
        mss_bytes=1448,
        srtt_seconds=0.0025,
        delivery_rate_bytes_per_second=125e6,
    )
    # An older kernel's shorter struct: the fields it lacks read 0, nothing raises.
    assert parse(bytes(data[:104])).delivery_rate_bytes_per_second == 0
    assert parse(bytes(data[:104])).retransmitted_segments == 7


def test_a_real_connection_has_a_window_and_a_round_trip() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            for _ in range(20):
                client.sendall(b"x" * 65536)
                peer.recv(1 << 20)
            facts = read(client)
            assert facts is not None
            assert facts.cwnd_segments >= 1
            assert facts.mss_bytes > 0
            assert facts.srtt_seconds > 0
            ledger = TcpLedger()
            ledger.retired_retransmits = 3  # an earlier connection of the stream
            ledger.sample(client)
            assert ledger.retransmitted_segments == 3 + ledger.current.retransmitted_segments
            ledger.connection_ended(client)
            assert ledger.current == TcpFacts()
