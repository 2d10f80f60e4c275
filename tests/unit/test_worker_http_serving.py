"""The metrics port's server: probes never wait for the pool, the queue is bounded per
source, and nothing starts a thread per request (real sockets on loopback)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from w5xde.worker import http_serving
from w5xde.worker.http_serving import HttpLoop, Request, Response, Routes
from w5xde.worker.refusals import RefusalLog


class Blocking(Routes):
    """`/healthz` inline; `/slow` holds a pool thread until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0

    def inline(self, request: Request) -> Response | None:
        return Response(200, b"ok\n") if request.path == "/healthz" else None

    def answer(self, request: Request) -> Response:
        self.entered += 1
        self.release.wait(30)
        return Response(200, b"slow\n")


@pytest.fixture
def served() -> Iterator[tuple[HttpLoop, Blocking]]:
    routes = Blocking()
    loop = HttpLoop("127.0.0.1", 0, routes, RefusalLog(logging.getLogger("test"), "http"))
    loop.start()
    yield loop, routes
    routes.release.set()
    loop.stop()


def send(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def status(sock: socket.socket) -> int:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return int(answer.split(b" ", 2)[1])


def test_probes_are_answered_while_the_pool_is_busy_and_the_queue_is_bounded(
    served: tuple[HttpLoop, Blocking],
) -> None:
    loop, routes = served
    threads = threading.active_count()
    held = http_serving.POOL_THREADS + http_serving.QUEUED_PER_SOURCE

    def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    # First every pool thread busy, then this source's share of the queue full.
    slow = [send(loop.port, "/slow") for _ in range(http_serving.POOL_THREADS)]
    until(lambda: routes.entered == http_serving.POOL_THREADS, "the pool busy")
    slow += [send(loop.port, "/slow") for _ in range(http_serving.QUEUED_PER_SOURCE)]
    until(lambda: loop.queued == http_serving.QUEUED_PER_SOURCE, "the queue full")
    # Both pool threads are busy and this source's queue is full: the next is told so.
    extra = send(loop.port, "/slow")
    assert status(extra) == 503
    # The probe does not wait for any of them.
    assert status(send(loop.port, "/healthz")) == 200
    assert threading.active_count() == threads
    routes.release.set()
    assert [status(sock) for sock in slow] == [200] * held
    assert loop.refusals.by_reason()["busy"] == 1
