"""The pull path end to end on loopback: a real worker serves its signed report over
HTTP, the operator's real ReportClient fetches it; forged, hanging, lying and absent
workers each come back as a reason, never as an exception or a hang."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from w5xde.contract import auth
from w5xde.contract.report import WorkerReport
from w5xde.local.run import free_ports
from w5xde.operator.observation import Fetched, FetchError, PodState
from w5xde.operator.report_client import ReportClient
from w5xde.worker.config import WorkerConfig
from w5xde.worker.metrics import MetricsServer
from w5xde.worker.report_endpoint import ReportEndpoint
from w5xde.worker.runtime import Worker

KEY = b"report-test-key-0123456789"


def _config(index: int, ports: list[int]) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "name": f"r-{index}",
            "clusterId": "unit",
            "listenHost": "127.0.0.1",
            "metricsPort": 0,
            "peers": [f"127.0.0.1:{port}" for port in ports],
            "workload": {"batchBytes": 16384, "rateLimitBytesPerSecond": 4_000_000},
            "compression": {"level": 1},
            "reporting": {"intervalSeconds": 1},
        }
    )


@pytest.fixture
def served() -> Iterator[tuple[list[Worker], list[MetricsServer]]]:
    ports = free_ports(2)
    workers = [Worker(_config(index, ports), KEY) for index in range(2)]
    servers = []
    for worker in workers:
        worker.start()
        endpoint = ReportEndpoint(KEY, worker.report, worker.resize)
        server = MetricsServer.for_worker(worker, "127.0.0.1", 0, report=endpoint)
        server.start()
        servers.append(server)
    yield workers, servers
    for server in servers:
        server.stop()
    for worker in workers:
        worker.stop(grace_seconds=0.2)


def _fetch(
    port: int, name: str, key: bytes = KEY, workers: int = 2, timeout: float = 2.0
) -> Fetched:
    async def run() -> Fetched:
        client = ReportClient(port=port)
        try:
            return await client.fetch(
                PodState(name, ready=True, ip="127.0.0.1"), auth.report_key(key), workers, timeout
            )
        finally:
            await client.close()

    return asyncio.run(run())


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_the_operator_pulls_a_signed_report_with_live_figures(
    served: tuple[list[Worker], list[MetricsServer]],
) -> None:
    workers, servers = served
    _wait(lambda: workers[1].report().batches > 20)
    fetched = _fetch(servers[1].port, "r-1")
    assert fetched.error is None, fetched.message
    report = fetched.report
    assert report is not None
    assert report.name == "r-1"
    assert report.batches > 20
    assert report.incarnation
    assert report.workers == 2
    assert abs(report.generated_at - time.time()) < 5
    assert report.throughput_bytes_per_second > 0


def _fetch_all(port: int, workers: int, generation: int) -> list[Fetched]:
    async def run() -> list[Fetched]:
        client = ReportClient(port=port)
        try:
            pods = [PodState("r-0", ready=True, ip="127.0.0.1")]
            return await client.fetch_all(pods, KEY, workers, 2.0, generation=generation)
        finally:
            await client.close()

    return asyncio.run(run())


def _signed(port: int, method: str, target: str, header: str) -> int:
    """Send one request with the given authorization header; the HTTP status."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: x\r\n{auth.AUTHORIZATION_HEADER}: {header}\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _header(method: str, target: str, at: float | None = None, nonce: str = "") -> str:
    stamp = time.time() if at is None else at
    return auth.authorization(
        auth.report_key(KEY), method, target, stamp, nonce or auth.new_nonce()
    )


def test_a_resize_is_its_own_signed_put_and_the_report_a_pure_read(
    served: tuple[list[Worker], list[MetricsServer]],
) -> None:
    workers, servers = served
    assert workers[0].workers == 2
    # Reading the report, even with the old `workers` parameter, changes nothing.
    status = _signed(
        servers[0].port, "GET", "/report?workers=1", _header("GET", "/report?workers=1")
    )
    assert status == 200
    assert workers[0].workers == 2
    fetched = _fetch_all(servers[0].port, workers=1, generation=7)
    assert fetched[0].report is not None
    assert workers[0].workers == 1
    assert fetched[0].report.workers == 1


def test_a_replayed_request_and_an_older_resize_are_refused(
    served: tuple[list[Worker], list[MetricsServer]],
) -> None:
    """The attack of issue 22: a signed request captured on the wire, replayed."""
    workers, servers = served
    port = servers[0].port
    report = "/report"
    captured = _header("GET", report)
    assert _signed(port, "GET", report, captured) == 200
    assert _signed(port, "GET", report, captured) == 401, "a replayed report request"
    # Scale to 1 (generation 5), then back to 2 (generation 6).
    to_one = "/resize?workers=1&generation=5"
    captured_resize = _header("PUT", to_one)
    assert _signed(port, "PUT", to_one, captured_resize) == 204
    assert workers[0].workers == 1
    to_two = "/resize?workers=2&generation=6"
    assert _signed(port, "PUT", to_two, _header("PUT", to_two)) == 204
    assert workers[0].workers == 2
    # The captured resize, replayed as is: its nonce is remembered.
    assert _signed(port, "PUT", to_one, captured_resize) == 401
    # Signed afresh (a key holder's old request re-sent): the generation is older.
    assert _signed(port, "PUT", to_one, _header("PUT", to_one)) == 409
    assert workers[0].workers == 2
    # The same generation again is a no-op (idempotent), another size under it a conflict.
    assert _signed(port, "PUT", to_two, _header("PUT", to_two)) == 204
    conflict = "/resize?workers=3&generation=6"
    assert _signed(port, "PUT", conflict, _header("PUT", conflict)) == 409
    assert workers[0].workers == 2
    # A stamp 59 s ahead (accepted before) is refused; 2 s ahead is within the skew.
    assert _signed(port, "GET", report, _header("GET", report, at=time.time() + 59)) == 401
    assert _signed(port, "GET", report, _header("GET", report, at=time.time() + 2)) == 200
    exported = _metrics(port)
    assert 'w5xde_report_refused_requests_total{reason="replayed"} 2.0' in exported
    assert 'w5xde_report_refused_requests_total{reason="stale resize"} 2.0' in exported


def _metrics(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.decode()


def test_a_request_without_the_key_is_refused_and_counted(
    served: tuple[list[Worker], list[MetricsServer]],
) -> None:
    workers, servers = served
    fetched = _fetch(servers[0].port, "r-0", key=b"not-the-cluster-key-000", workers=1)
    assert fetched.error is FetchError.BAD_REPORT
    assert fetched.message == "HTTP 401"
    assert workers[0].workers == 2  # an unauthenticated request cannot resize a worker


def test_a_report_for_another_name_is_refused(
    served: tuple[list[Worker], list[MetricsServer]],
) -> None:
    _, servers = served
    fetched = _fetch(servers[0].port, "r-1")  # r-0 answers where r-1 was expected
    assert fetched.error is FetchError.BAD_REPORT
    assert "not the pod" in fetched.message


class _Liar(BaseHTTPRequestHandler):
    """Answers every request with `body` under a signature made with `key`."""

    body = b"{}"
    key = KEY

    def do_GET(self) -> None:
        header = self.headers.get(auth.AUTHORIZATION_HEADER, "")
        nonce = dict(p.partition("=")[::2] for p in header.split(" ", 1)[1].split(","))["nonce"]
        signature = auth.response_signature(auth.report_key(self.key), nonce, self.body)
        self.send_response(200)
        self.send_header(auth.SIGNATURE_HEADER, signature)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("body", "key", "needle"),
    [
        (b'{"name": "r-0", "batches": -5}', KEY, "batches"),  # signed, out of bounds
        (b"not json at all", KEY, "report"),
        (
            WorkerReport(name="r-0").model_dump_json().encode(),
            b"forger-key-0000000000",
            "signature",
        ),
        (b"x" * (70 * 1024), KEY, "too large"),
    ],
)
def test_garbage_forged_or_huge_reports_are_bad_reports(
    body: bytes, key: bytes, needle: str
) -> None:
    handler = type("Liar", (_Liar,), {"body": body, "key": key})
    for port in _serve(handler):
        fetched = _fetch(port, "r-0", timeout=10.0)  # a loaded machine answers slowly
        assert fetched.error is FetchError.BAD_REPORT
        assert needle in fetched.message


def test_a_hanging_or_absent_worker_is_unreachable_within_the_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts (in the kernel) and never answers
        started = time.monotonic()
        fetched = _fetch(silent.getsockname()[1], "r-0", timeout=1.0)
        assert time.monotonic() - started < 3.0
    assert fetched.error is FetchError.UNREACHABLE
    assert fetched.message == "timed out"
    closed = free_ports(1)[0]
    assert _fetch(closed, "r-0").error is FetchError.UNREACHABLE


def test_fetch_all_returns_one_result_per_pod_with_an_ip(
    served: tuple[list[Worker], list[MetricsServer]],
) -> None:
    _, servers = served

    async def run() -> list[Fetched]:
        client = ReportClient(port=servers[0].port)
        try:
            pods = [
                PodState("r-0", True, ip="127.0.0.1"),
                PodState("r-9", True, ip="127.0.0.2"),  # nobody there
                PodState("r-5", False),  # no IP yet: not asked
            ]
            return await client.fetch_all(pods, KEY, 2, 1.0)
        finally:
            await client.close()

    results = {item.name: item for item in asyncio.run(run())}
    assert set(results) == {"r-0", "r-9"}
    assert results["r-0"].report is not None
    assert results["r-9"].error is FetchError.UNREACHABLE
    assert json.loads(results["r-0"].report.model_dump_json(by_alias=True))["name"] == "r-0"
