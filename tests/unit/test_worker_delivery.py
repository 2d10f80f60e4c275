"""Real workers on loopback: delivery, duplicate drop, resize hand-over, metrics endpoints."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from unit.loopback import FRAME_CONTEXT, KEY, wait_for, worker_config
from w5xde.api.v1alpha1 import CompressionSpec, LinkState
from w5xde.contract.report import LinkReport, WorkerReport
from w5xde.local.run import free_ports
from w5xde.worker import pacing, protocol
from w5xde.worker.codec import BatchCompressor
from w5xde.worker.handshake import Identity, client_handshake
from w5xde.worker.metrics import MetricsServer
from w5xde.worker.protocol import HEADER_BYTES, CodecId, FrameDecoder, FrameType
from w5xde.worker.runtime import Worker


def kernel_granted(requested: int, cap: str) -> int:
    """SO_SNDBUF/SO_RCVBUF as Linux grants them: min(request, net.core.<cap>) doubled."""
    limit = int(Path(f"/proc/sys/net/core/{cap}").read_text())
    return max(2 * min(requested, limit), 4608)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:  # refused or closed without an answer (a server over its cap)
        return 0


def nonzero_rates(report: WorkerReport) -> WorkerReport | None:
    return report if report.throughput_bytes_per_second > 0 else None


def test_a_ring_of_two_delivers_verified_batches_both_ways(
    workers: Callable[..., list[Worker]],
) -> None:
    first, second = workers(2)
    wait_for(lambda: all(w.report().batches > 50 for w in (first, second)))
    report = first.report()
    assert report.lost_batches == 0
    assert report.corrupt_batches == 0
    assert 1.5 < report.raw_bytes / report.wire_bytes < 3.0
    assert report.raw_bytes == report.batches * 16384
    assert report.socket_buffer.requested == 262144
    # What the kernel granted, read back: it caps the request at wmem_max/rmem_max and
    # doubles it (for its own bookkeeping).
    assert report.socket_buffer.effective_send == kernel_granted(262144, "wmem_max")
    assert report.socket_buffer.effective_receive == kernel_granted(262144, "rmem_max")
    assert report.peers_connected == 1
    assert first.ready()
    # Rates cover an interval of at least a second: wait for the first one that has data.
    rates = wait_for(lambda: nonzero_rates(first.report()))
    assert rates.throughput_bytes_per_second > 0
    assert rates.batches_per_second > 0
    assert rates.wire_bytes_per_second < rates.throughput_bytes_per_second
    # Seconds per 30 s window: positive, and at most 30 s for each of the busy threads.
    assert 0 < rates.compression_seconds <= 30 * 3
    assert 0 < rates.network_seconds <= 30 * 3
    assert rates.rss_bytes > 10_000_000


def _frames(start: int, stop: int) -> list[bytes]:
    compressor = BatchCompressor(CompressionSpec(level=1))
    out = []
    for sequence in range(start, stop):
        batch = (b"batch %d " % sequence) * 500
        payload, _ = compressor.compress(batch)
        header = protocol.pack_header(
            FrameType.DATA,
            CodecId.ZSTD,
            sequence=sequence,
            raw_length=len(batch),
            payload_length=len(payload),
        )
        out.append(header + bytes(payload))
    return out


def _send_and_wait_ack(worker_port: int, session: int, frames: list[bytes], last: int) -> None:
    sock = socket.create_connection(("127.0.0.1", worker_port))
    client_handshake(
        sock, Identity("unit", "hand-written", KEY), stream=0, session=session, resume_from=0
    )
    sock.sendall(b"".join(frames))
    decoder = FrameDecoder()
    acked = -1
    sock.settimeout(5)
    while acked < last:
        for frame in decoder.feed(sock.recv(HEADER_BYTES * 16)):
            assert frame.header.kind == FrameType.ACK
            acked = frame.header.sequence
    sock.sendall(protocol.close_frame())
    sock.close()


def test_a_replayed_window_is_acknowledged_but_duplicates_are_dropped(
    workers: Callable[..., list[Worker]],
) -> None:
    (receiver,) = workers(1, compression=FRAME_CONTEXT)
    port = receiver.config.listen_port()
    session = int.from_bytes(os.urandom(8), "little")
    _send_and_wait_ack(port, session, _frames(0, 10), last=9)
    _send_and_wait_ack(port, session, _frames(5, 15), last=14)
    report = receiver.report()
    assert report.batches == 15
    assert receiver.extras().duplicate_batches == 5
    assert report.lost_batches == 0
    # A new session (a restarted sender) starts afresh from its resume point.
    _send_and_wait_ack(port, session + 1, _frames(0, 3), last=2)
    assert receiver.report().batches == 18


def test_a_gap_in_sequences_is_counted_lost(workers: Callable[..., list[Worker]]) -> None:
    (receiver,) = workers(1, compression=FRAME_CONTEXT)
    frames = _frames(0, 6)
    _send_and_wait_ack(receiver.config.listen_port(), 99, frames[:2] + frames[4:], last=5)
    assert receiver.report().lost_batches == 2


def test_resize_hands_unacknowledged_batches_to_the_remaining_peers(
    workers: Callable[..., list[Worker]],
) -> None:
    first, second, third = workers(3, workload={"batchBytes": 16384, "topology": "all-to-all"})
    wait_for(lambda: third.report().batches > 20 and second.report().batches > 20)
    third.stop(grace_seconds=0)
    # The stream to the stopped worker keeps its window until it is told the peer left
    # (its own window: the worker's total also counts the stream to the second one).
    to_third = third.config.peers[2]
    wait_for(
        lambda: any(
            stream.unacked > 0 for (peer, _), stream in first._streams.items() if peer == to_third
        )
    )
    received_before = second.report().batches
    first.resize(2)
    wait_for(lambda: first.report().resent_batches > 0)
    wait_for(lambda: second.report().batches > received_before + 20)
    assert first.report().lost_batches == 0
    assert second.report().lost_batches == 0


def test_growing_again_reconnects_to_the_returning_peer(
    workers: Callable[..., list[Worker]],
) -> None:
    first, _, third = workers(3, workload={"batchBytes": 16384, "topology": "all-to-all"})
    wait_for(lambda: third.report().batches > 20)
    first.resize(2)
    wait_for(lambda: first.extras().outgoing_streams_connected == 1)
    before = third.report().batches
    first.resize(3)
    wait_for(lambda: first.extras().outgoing_streams_connected == 2)
    # `third` still hears from the second worker; the first one's new stream adds to it.
    wait_for(lambda: third.extras().incoming_streams == 2)
    wait_for(lambda: third.report().batches > before + 50)
    assert third.report().lost_batches == 0


def test_metrics_and_probes(workers: Callable[..., list[Worker]]) -> None:
    first, _ = workers(2)
    server = MetricsServer.for_worker(first, "127.0.0.1", 0)
    server.start()
    try:
        wait_for(lambda: first.report().batches > 5)
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            text = response.read().decode()
        assert "w5xde_received_batches_total" in text
        assert "w5xde_received_raw_bytes_total" in text
        assert "w5xde_network_seconds_total" in text
        with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
            assert response.status == 200
        # Ready means a stream is connected: on a loaded machine one may be reconnecting.
        assert wait_for(lambda: http_status(base + "/readyz") == 200)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/nope", timeout=5)
    finally:
        server.stop()


def test_a_worker_stays_ready_when_its_only_peer_goes_away(
    workers: Callable[..., list[Worker]],
) -> None:
    """Readiness follows the worker, not its peers: the survivor of a pair is not
    reported unready because the other one died (the link's state says that)."""
    first, second = workers(2)
    wait_for(lambda: first.ready() and second.ready())
    second.stop(grace_seconds=0.2)
    wait_for(lambda: first.report().peers_connected == 0)
    assert first.ready()


def test_the_rate_limit_caps_what_a_worker_sends(
    workers: Callable[..., list[Worker]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streams really go through the limiter (its arithmetic is test_worker_pacing's).

    Only an upper bound: what arrives never exceeds the rate over the time since the
    workers started, plus the limiter's burst and one batch.  A slow machine sends less,
    never more, so the check does not depend on how fast this machine is; a sender
    pacing 40 % too fast breaks it after about a second (the burst is cut to 0.1 s).
    """
    monkeypatch.setattr(pacing, "BURST_SECONDS", 0.1)
    rate = 200_000
    started = time.monotonic()
    first, second = workers(2, workload={"batchBytes": 16384, "rateLimitBytesPerSecond": rate})
    wait_for(lambda: second.report().raw_bytes >= 3 * rate)
    received = second.report().raw_bytes
    elapsed = time.monotonic() - started
    assert received <= rate * (elapsed + 0.1) + 16384
    assert first.report().lost_batches == 0


def test_streams_per_peer_open_parallel_connections(workers: Callable[..., list[Worker]]) -> None:
    first, second = workers(2, workload={"batchBytes": 16384, "streamsPerPeer": 3})
    wait_for(lambda: second.extras().incoming_streams == 3)
    wait_for(lambda: first.extras().outgoing_streams_connected == 3)
    assert first.report().peers_connected == 1
    wait_for(lambda: second.report().batches > 30)
    assert second.report().lost_batches == 0


def test_a_protocol_violation_closes_only_that_connection(
    workers: Callable[..., list[Worker]],
) -> None:
    (receiver,) = workers(1, compression=FRAME_CONTEXT)
    port = receiver.config.listen_port()
    sock = socket.create_connection(("127.0.0.1", port))
    client_handshake(sock, Identity("unit", "rogue", KEY), stream=0, session=5, resume_from=0)
    # A DATA header that claims a 4 GiB payload: refused before anything is buffered.
    sock.sendall(protocol.HEADER.pack(FrameType.DATA, CodecId.ZSTD, 0, 0, 10, 2**32 - 1, 0))
    sock.settimeout(5)
    assert sock.recv(100) == b""
    sock.close()
    _send_and_wait_ack(port, 6, _frames(0, 4), last=3)
    assert receiver.report().batches == 4


def test_a_corrupt_batch_is_counted_and_not_acknowledged(
    workers: Callable[..., list[Worker]],
) -> None:
    (receiver,) = workers(1, compression=FRAME_CONTEXT)
    port = receiver.config.listen_port()
    frame = bytearray(_frames(0, 1)[0])
    frame[-3] ^= 0xFF
    sock = socket.create_connection(("127.0.0.1", port))
    client_handshake(sock, Identity("unit", "flaky", KEY), stream=0, session=8, resume_from=0)
    sock.sendall(bytes(frame))
    sock.settimeout(5)
    assert sock.recv(100) == b""
    sock.close()
    report = receiver.report()
    assert report.corrupt_batches == 1
    assert report.batches == 0


def test_a_dead_accept_path_fails_readiness_then_liveness_after_the_grace(
    workers: Callable[..., list[Worker]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose accept path died answers HTTP but delivers nothing: the kubelet
    must restart it, so /readyz fails at once and /healthz after the grace period."""
    from w5xde.worker import runtime

    monkeypatch.setattr(runtime, "HEALTH_GRACE_S", 0.5)
    first, _ = workers(2)
    server = MetricsServer.for_worker(first, "127.0.0.1", 0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert wait_for(lambda: http_status(base + "/readyz") == 200)
        assert http_status(base + "/healthz") == 200
        loop = first._receive_loop
        assert loop is not None
        loop.stop()  # as if the thread had died: nothing accepts any more
        assert http_status(base + "/readyz") == 503
        assert http_status(base + "/healthz") == 200  # within the grace period
        assert wait_for(lambda: http_status(base + "/healthz") == 503, timeout=5)
    finally:
        server.stop()


def test_the_metrics_server_caps_connections_and_cuts_slow_requests(
    workers: Callable[..., list[Worker]],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from w5xde.worker import http_serving

    monkeypatch.setattr(http_serving, "REQUEST_DEADLINE_S", 1.0)
    first, _ = workers(2)
    server = MetricsServer.for_worker(first, "127.0.0.1", 0)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    assert wait_for(lambda: http_status(base + "/readyz") == 200, timeout=10)
    threads = threading.active_count()
    slow = [
        socket.create_connection(("127.0.0.1", server.port))
        for _ in range(3 * http_serving.PER_SOURCE)
    ]
    try:
        for sock in slow:
            # A request that never completes (an early one may be evicted already).
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                sock.sendall(b"GET /metr")
        # Over the source's cap the oldest half-open requests go; a probe still gets in.
        assert http_status(base + "/healthz") == 200
        assert http_status(base + "/readyz") == 200
        assert threading.active_count() == threads, "a thread was started for a request"
        for sock in slow:
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            exported = response.read().decode()
        refused = {
            line.split('reason="')[1].split('"')[0]: float(line.split()[-1])
            for line in exported.splitlines()
            if line.startswith("w5xde_metrics_refused_connections_total{")
        }
        assert refused["over the per-source cap"] >= 2 * http_serving.PER_SOURCE
        assert refused["request deadline"] >= 1
    finally:
        for sock in slow:
            sock.close()
        server.stop()
    # Clients that hang up or stall are counted, never printed as tracebacks.
    assert "Traceback" not in capfd.readouterr().err


def test_workers_with_tls_identities_deliver_over_mutual_tls(
    workers: Callable[..., list[Worker]], tmp_path: Path
) -> None:
    from w5xde.local.run import issue_identities

    ports = free_ports(2)
    names = [f"t-{index}" for index in range(2)]
    sections = issue_identities(names, tmp_path)
    group = [
        Worker(worker_config(index, ports, tls=sections[names[index]]), KEY) for index in range(2)
    ]
    for worker in group:
        worker.start()
    try:
        wait_for(lambda: all(worker.report().batches > 50 for worker in group))
        for worker in group:
            assert worker.tls is not None
            assert worker.tls.ready
            report = worker.report()
            assert report.certificate is not None
            assert report.certificate.request is None
            assert report.certificate.not_after > time.time()
    finally:
        # Together, as a cluster stops: each drains its window into a peer still listening.
        stoppers = [threading.Thread(target=worker.stop) for worker in group]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(30)
    received = [worker.report() for worker in group]
    sent = [worker.extras() for worker in group]
    assert [r.lost_batches for r in received] == [0, 0]
    assert [r.corrupt_batches for r in received] == [0, 0]
    # What each acknowledged as a sender is what the other verified.
    assert sent[0].sent_batches == received[1].batches
    assert sent[1].sent_batches == received[0].batches


def _first_settled_link(worker: Worker) -> LinkReport:
    """The worker's one link, once it is past `Connecting` (started, then stopped)."""
    worker.start()
    try:
        (link,) = wait_for(
            lambda: [
                link for link in worker.report().links if link.state is not LinkState.CONNECTING
            ],
            timeout=15,
        )
        return link
    finally:
        worker.stop(grace_seconds=0.2)


def test_a_peer_that_never_answers_the_handshake_is_unreachable_not_refused(
    workers: Callable[..., list[Worker]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen peer's kernel still completes the TCP connect; the handshake then times
    out. That peer was not reached: `Unreachable`. A peer that answers and says no (a
    wrong cluster key) is `Refused`."""
    from w5xde.worker import handshake, progress

    monkeypatch.setattr(progress, "STALL_AFTER_S", 1.0)
    monkeypatch.setattr(handshake, "HANDSHAKE_TIMEOUT_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # connects complete in the kernel; nothing ever answers
        port = silent.getsockname()[1]
        link = _first_settled_link(Worker(worker_config(0, [free_ports(1)[0], port]), KEY))
    assert link.state is LinkState.UNREACHABLE, link
    assert "handshake" in link.state_message
    first, _ = workers(2)
    config = worker_config(1, [first.config.listen_port(), free_ports(1)[0]])
    link = _first_settled_link(Worker(config, b"\xff" * 32))
    assert link.state is LinkState.REFUSED, link


def test_a_file_source_worker_leaves_no_file_open_after_it_stops(
    tmp_path: Path, workers: Callable[..., list[Worker]]
) -> None:
    """Every stream's file is closed when the stream ends (they stayed open until the
    garbage collector found them), and the start-up check of `workload.path` keeps none."""
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(1 << 20))

    def handles() -> int:
        return sum(
            1
            for fd in Path("/proc/self/fd").iterdir()
            if os.path.realpath(fd) == str(data)
            if fd.exists()
        )

    first, second = workers(2, workload={"source": "file", "path": str(data)})
    wait_for(lambda: first.report().batches > 10 and second.report().batches > 10)
    assert handles() == 2  # one per stream: the start-up check's is closed
    first.stop(grace_seconds=0.2)
    second.stop(grace_seconds=0.2)
    assert handles() == 0
