"""The metrics port's HTTP server: one selector thread, probes answered inline, a fixed
pool for the rest, fair per source.  Nothing here starts a thread per request.

Why not `http.server`: it spends a thread on every connection until the request is in,
so a few hundred half-open requests took every slot (and, at the pod's pids limit,
every request needs a thread it cannot get), and `/readyz` failed on a healthy worker.
Here:

- one thread (`http`) accepts, reads request heads and writes answers, non-blocking;
  a connection costs a file descriptor and a few KiB until its request is complete;
- `/healthz` and `/readyz` are answered on that thread as soon as their request line is
  in: no queue, no pool, no new thread, so the kubelet's probes are never behind anyone;
- everything else (`/metrics`, the operator's `/report`, `PUT /resize`, `PUT
  /certificate`) goes to `POOL_THREADS` threads started with the server, through a
  bounded queue where signed control requests go before scrapes; over the queue: 503;
- connections are bounded per source address (`PER_SOURCE`) and in total
  (`MAX_CONNECTIONS`); over either, the oldest connection of the most represented
  source that is still sending its request is closed (a flood closes its own);
- a request must be in within `REQUEST_DEADLINE_S` of accept, however it trickles;
  an answer must be taken by the client within `WRITE_DEADLINE_S`.

Every refusal is counted by reason and logged at most once per interval
(`RefusalLog`), never as a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from w5xde.worker.admission import source_of
from w5xde.worker.refusals import RefusalLog

log = logging.getLogger("w5xde.metrics")

#: Open connections at once, all sources.
MAX_CONNECTIONS = 128
#: Open connections of one source address.
PER_SOURCE = 8
#: The whole request (head and body) must arrive within this long of accept.
REQUEST_DEADLINE_S = 5.0
#: The client must take the whole answer within this long of it being ready.
WRITE_DEADLINE_S = 10.0
#: A request head larger than this is refused.
MAX_HEAD_BYTES = 8192
#: Threads that answer `/metrics` and the operator's requests, started with the server.
POOL_THREADS = 2
#: Requests waiting for a pool thread, all sources / one source.
MAX_QUEUED = 16
QUEUED_PER_SOURCE = 4
#: Connections accepted per wake-up.
ACCEPTS_PER_WAKE = 64
#: The listen backlog.  A flood of reconnecting clients keeps at most as many
#: connections in the accept queue as it has sockets; a backlog well above that means
#: a probe's SYN is queued behind them (drained at thousands a second), never dropped
#: (a dropped SYN is retried after 1 s: the kubelet's whole probe timeout).
LISTEN_BACKLOG = 1024
_TICK_S = 0.25
_LINGER_RESET = b"\1\0\0\0\0\0\0\0"


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    source: str

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Status"
        lines = [
            f"HTTP/1.1 {self.status} {phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


class Routes:
    """What the server answers; subclassed by the metrics server."""

    def inline(self, request: Request) -> Response | None:
        """An answer cheap enough for the server's own thread (probes), else None."""
        return None

    def answer(self, request: Request) -> Response:
        """Any other request, on a pool thread."""
        return Response(404, b"not found\n")

    def urgent(self, request: Request) -> bool:
        """Goes before scrapes in the pool's queue (the operator's signed requests)."""
        return False

    def max_body(self, request: Request) -> int:
        """The largest body the request may carry."""
        return 0


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    source: str
    deadline: float
    order: int
    received: bytearray = field(default_factory=bytearray)
    request: Request | None = None
    head_end: int = -1
    body_length: int = 0
    outgoing: bytes = b""
    #: "reading", "queued" (waiting for or on a pool thread), "writing".
    stage: str = "reading"


class HttpLoop:
    """Serve `routes` on (host, port); `start()` starts every thread it will ever use."""

    def __init__(
        self,
        host: str,
        port: int,
        routes: Routes,
        refusals: RefusalLog,
        *,
        backlog: int = LISTEN_BACKLOG,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(backlog)
        except OSError:
            listener.close()
            raise
        listener.setblocking(False)
        self._listener = listener
        self.port: int = listener.getsockname()[1]
        self._routes = routes
        self.refusals = refusals
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._connections: dict[socket.socket, _Connection] = {}
        self._order = 0
        self._lock = threading.Condition(threading.Lock())
        self._urgent: deque[_Connection] = deque()
        self._normal: deque[_Connection] = deque()
        self._answered: deque[tuple[_Connection, bytes]] = deque()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._pool = [
            threading.Thread(target=self._work, name=f"http-pool-{n}", daemon=True)
            for n in range(POOL_THREADS)
        ]

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_in, selectors.EVENT_READ, None)
        for thread in self._pool:
            thread.start()
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Requests waiting for a pool thread."""
        with self._lock:
            return len(self._urgent) + len(self._normal)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:
            self._listener.close()

    # --- the loop thread -----------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic() + _TICK_S
        try:
            while not self._stopping.is_set():
                for key, mask in self._selector.select(_TICK_S):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_in:
                        self._drain_wake()
                    else:
                        connection = key.data
                        assert isinstance(connection, _Connection)
                        if mask & selectors.EVENT_READ and connection.stage == "reading":
                            self._read(connection)
                        if mask & selectors.EVENT_WRITE and connection.stage == "writing":
                            self._write(connection)
                now = time.monotonic()
                if now >= next_tick:
                    self._sweep(now)
                    next_tick = now + _TICK_S
        finally:
            for connection in list(self._connections.values()):
                self._close(connection)
            self._selector.close()
            self._listener.close()
            self._wake_in.close()
            self._wake_out.close()

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:  # EMFILE and the like: count, try again later
                self.refusals.refused("accept failed", str(error))
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    self._evict(None, "out of file descriptors")
                return
            sock.setblocking(False)
            self._order += 1
            source = source_of(address)
            connection = _Connection(
                sock, source, time.monotonic() + REQUEST_DEADLINE_S, self._order
            )
            self._connections[sock] = connection
            self._selector.register(sock, selectors.EVENT_READ, connection)
            same = sum(1 for c in self._connections.values() if c.source == source)
            if same > PER_SOURCE:
                self._evict(source, "over the per-source cap")
            if len(self._connections) > MAX_CONNECTIONS:
                self._evict(None, "over the connection cap")

    def _evict(self, source: str | None, reason: str) -> None:
        """Close the oldest connection still sending its request, of `source` or else of
        the most represented source."""
        reading = [c for c in self._connections.values() if c.stage == "reading"]
        if source is None:
            counts = Counter(c.source for c in reading)
            if not counts:
                return
            source = max(counts, key=lambda s: counts[s])
        mine = [c for c in reading if c.source == source]
        if not mine:
            return
        victim = min(mine, key=lambda c: c.order)
        self.refusals.refused(reason, victim.source)
        self._close(victim, reset=True)

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.refusals.refused("client hung up", connection.source)
            self._close(connection)
            return
        connection.received += data
        if connection.request is None and not self._parse_head(connection):
            return
        request = connection.request
        assert request is not None
        if len(connection.received) - connection.head_end < connection.body_length:
            return
        body = bytes(connection.received[connection.head_end :][: connection.body_length])
        request = Request(request.method, request.target, request.headers, body, request.source)
        connection.request = request
        connection.received = bytearray()
        self._dispatch(connection, request)

    def _parse_head(self, connection: _Connection) -> bool:
        """True once the head is in and parsed; answers or closes bad requests."""
        end = connection.received.find(b"\r\n\r\n")
        if end < 0:
            if len(connection.received) > MAX_HEAD_BYTES:
                self._refuse(connection, 431, "request head too large")
            return False
        if end > MAX_HEAD_BYTES:
            self._refuse(connection, 431, "request head too large")
            return False
        try:
            text = bytes(connection.received[:end]).decode("latin-1")
            request_line, *header_lines = text.split("\r\n")
            method, target, _version = request_line.split(" ")
        except ValueError:
            self._refuse(connection, 400, "bad request")
            return False
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        request = Request(method, target, headers, b"", connection.source)
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            self._refuse(connection, 400, "bad request")
            return False
        if int(length_text) > self._routes.max_body(request):
            self._refuse(connection, 413, "request body too large")
            return False
        connection.request = request
        connection.head_end = end + 4
        connection.body_length = int(length_text)
        return True

    def _dispatch(self, connection: _Connection, request: Request) -> None:
        try:
            inline = self._routes.inline(request)
        except Exception:  # a bug in a probe must not end the server (logged)
            log.exception("answering %s %s failed", request.method, request.path)
            inline = Response(500, b"internal error\n")
        if inline is not None:
            self._respond(connection, inline.encode())
            return
        urgent = self._routes.urgent(request)
        dropped: _Connection | None = None
        with self._lock:
            queued = [*self._urgent, *self._normal]
            mine = sum(1 for c in queued if c.source == connection.source)
            busy = mine >= QUEUED_PER_SOURCE or (len(queued) >= MAX_QUEUED and not urgent)
            if not busy:
                connection.stage = "queued"
                (self._urgent if urgent else self._normal).append(connection)
                if len(queued) >= MAX_QUEUED and self._normal:
                    dropped = self._normal.pop()  # a signed request goes before a scrape
                self._lock.notify()
        if busy:
            self.refusals.refused("busy", connection.source)
            self._respond(connection, _BUSY)
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection.sock)
        if dropped is not None:
            self.refusals.refused("busy", dropped.source)
            self._respond(dropped, _BUSY)

    def _refuse(self, connection: _Connection, status: int, reason: str) -> None:
        self.refusals.refused(reason, connection.source)
        self._respond(connection, Response(status, f"{reason}\n".encode()).encode())

    def _respond(self, connection: _Connection, answer: bytes) -> None:
        if connection.sock not in self._connections:
            return
        connection.stage = "writing"
        connection.outgoing = answer
        connection.deadline = time.monotonic() + WRITE_DEADLINE_S
        try:
            self._selector.modify(connection.sock, selectors.EVENT_WRITE, connection)
        except (KeyError, ValueError):
            self._selector.register(connection.sock, selectors.EVENT_WRITE, connection)
        self._write(connection)

    def _write(self, connection: _Connection) -> None:
        try:
            sent = connection.sock.send(connection.outgoing)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.refusals.refused("client hung up", connection.source)
            self._close(connection)
            return
        connection.outgoing = connection.outgoing[sent:]
        if not connection.outgoing:
            self._close(connection)

    def _sweep(self, now: float) -> None:
        for connection in list(self._connections.values()):
            if connection.stage != "queued" and connection.deadline < now:
                reason = "request deadline" if connection.stage == "reading" else "write deadline"
                self.refusals.refused(reason, connection.source)
                self._close(connection, reset=True)

    def _close(self, connection: _Connection, *, reset: bool = False) -> None:
        sock = connection.sock
        if self._connections.pop(sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        if reset:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_in.recv(4096):
                pass
        while True:
            with self._lock:
                if not self._answered:
                    return
                connection, answer = self._answered.popleft()
            self._respond(connection, answer)

    # --- the pool threads --------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._urgent and not self._normal and not self._stopping.is_set():
                    self._lock.wait()
                if self._stopping.is_set():
                    return
                connection = (self._urgent or self._normal).popleft()
            request = connection.request
            assert request is not None
            try:
                response = self._routes.answer(request)
            except Exception:  # one request's bug must not end the pool thread (logged)
                log.exception("answering %s %s failed", request.method, request.path)
                response = Response(500, b"internal error\n")
            with self._lock:
                self._answered.append((connection, response.encode()))
            self._wake()


_BUSY = Response(503, b"busy\n", headers={"Retry-After": "1"}).encode()


def handler_for(
    inline: Callable[[Request], Response | None],
    answer: Callable[[Request], Response],
) -> Routes:
    """Routes from two functions (tests and small servers)."""

    class _Routes(Routes):
        def inline(self, request: Request) -> Response | None:
            return inline(request)

        def answer(self, request: Request) -> Response:
            return answer(request)

    return _Routes()
