"""Fair admission of incoming data connections before they are proven.

An accepted connection is *pending* until its handshake (TLS, Hello, key proof) is
done.  Pending connections cost the worker a slot, and, once their first bytes arrive,
a handshake thread for up to the handshake deadline.  Under a flood, first come first
served hands both to whoever connects fastest; here:

- a silent connection costs no thread: it waits in the receive loop's selector and is
  handed to a thread only when it has sent something;
- pending connections are bounded per unknown source address (`PENDING_PER_SOURCE`)
  and in total (`MAX_PENDING`); beyond either, the oldest waiting connection of the most
  represented source is evicted (so a flood evicts itself, not the others; a known
  source, such as loopback in `w5xde local`, is bounded by the total alone);
- known peers (addresses in the worker's peer list, and sources that proved a
  certificate lately) have a reserve of pending slots (`KNOWN_RESERVE`) and a thread
  of their own (`RESERVED_THREADS`), and are picked first by every thread;
- a thread picks, among connections with bytes waiting, the source with the fewest
  handshakes running (an unknown source runs at most `RUNNING_PER_SOURCE` at once).

All of it is one lock and plain lists: the counts involved are tens, not thousands.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from w5xde.api.v1alpha1 import Topology
from w5xde.worker import topology
from w5xde.worker.config import WorkerConfig, own_index, split_host_port

#: Pending handshakes at once, all sources.
MAX_PENDING = 64
#: Of those, slots only known peers may fill.
KNOWN_RESERVE = 16
#: Pending handshakes of one source address.
PENDING_PER_SOURCE = 16
#: Handshakes of one source running on threads at once.
RUNNING_PER_SOURCE = 2
#: Handshake threads that take only known peers.
RESERVED_THREADS = 1
#: Sources remembered as known after they proved a certificate.
PROVEN_SOURCES = 4096
#: Why an entry was evicted.
SOURCE_CAP = "source over its pending cap"
TOTAL_CAP = "pending cap"


class Stage(enum.Enum):
    WAITING = "waiting"  # accepted, nothing received yet
    READY = "ready"  # bytes waiting, no thread yet
    RUNNING = "running"  # on a handshake thread


@dataclass(eq=False)
class Pending:
    """One connection waiting for, or in, its handshake."""

    source: str
    known: bool
    accepted_at: float
    deadline: float
    connection: object
    stage: Stage = Stage.WAITING
    order: int = 0


def source_of(address: object) -> str:
    """The source address of a peer (`accept()`'s second value), IPv4-mapped folded."""
    host = address[0] if isinstance(address, tuple) else str(address)
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        return str(host)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


@dataclass
class KnownPeers:
    """Addresses of the cluster's workers: from the peer list, and proven sources."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    configured: frozenset[str] = frozenset()
    proven: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def __contains__(self, source: str) -> bool:
        with self.lock:
            return source in self.configured or source in self.proven

    def configure(self, hosts: Iterable[str], *, resolve: bool = False) -> None:
        """The peer list's hosts: addresses as they are, names resolved if asked (blocking)."""
        found: set[str] = set()
        for host in hosts:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                pass
            else:
                found.add(source_of((host,)))
                continue
            if not resolve:
                continue
            try:
                infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            except OSError:
                continue
            found.update(source_of(info[4]) for info in infos)
        with self.lock:
            self.configured = frozenset(found)

    def prove(self, source: str) -> None:
        with self.lock:
            self.proven[source] = None
            self.proven.move_to_end(source)
            while len(self.proven) > PROVEN_SOURCES:
                self.proven.popitem(last=False)


class Admission:
    """The pending handshakes of one receive loop; thread-safe.

    The loop calls `admit`, `ready` and `expired`; handshake threads call `take` and
    `done`.  Whatever `admit` and `expired` return is the loop's to close.
    """

    def __init__(
        self,
        *,
        max_pending: int = MAX_PENDING,
        per_source: int = PENDING_PER_SOURCE,
        known_reserve: int = KNOWN_RESERVE,
        running_per_source: int = RUNNING_PER_SOURCE,
    ) -> None:
        self.max_pending = max_pending
        self.per_source = per_source
        self.known_reserve = known_reserve
        self.running_per_source = running_per_source
        self._lock = threading.Condition(threading.Lock())
        self._entries: list[Pending] = []
        self._counter = 0
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def admit(self, entry: Pending) -> list[tuple[Pending, str]]:
        """Add `entry`; returns the entries evicted to make room (possibly `entry`), each
        with the cap that evicted it."""
        evicted: list[tuple[Pending, str]] = []
        with self._lock:
            self._counter += 1
            entry.order = self._counter
            self._entries.append(entry)
            if not entry.known and self._count(entry.source) > self.per_source:
                evicted.append((self._evict_from(entry.source), SOURCE_CAP))
            unknown = sum(1 for e in self._entries if not e.known)
            if not entry.known and unknown > self.max_pending - self.known_reserve:
                evicted.append((self._evict_from(self._most_represented(known=False)), TOTAL_CAP))
            if len(self._entries) > self.max_pending:
                evicted.append((self._evict_from(self._most_represented(known=None)), TOTAL_CAP))
        return evicted

    def ready(self, entry: Pending) -> bool:
        """`entry` has bytes waiting; False if it is no longer pending."""
        with self._lock:
            if entry not in self._entries or entry.stage is not Stage.WAITING:
                return False
            entry.stage = Stage.READY
            self._lock.notify_all()
        return True

    def take(self, *, reserved: bool, timeout: float | None = None) -> Pending | None:
        """The next connection for a handshake thread (None when closed or timed out)."""
        with self._lock:
            while not self._closed:
                chosen = self._pick(reserved)
                if chosen is not None:
                    chosen.stage = Stage.RUNNING
                    return chosen
                if not self._lock.wait(timeout) and timeout is not None:
                    return None
            return None

    def done(self, entry: Pending) -> None:
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)
            self._lock.notify_all()

    def expired(self, now: float) -> list[Pending]:
        """Entries past their deadline that no thread holds (threads keep their own)."""
        with self._lock:
            gone = [e for e in self._entries if e.stage is not Stage.RUNNING and e.deadline <= now]
            for entry in gone:
                self._entries.remove(entry)
        return gone

    def close(self) -> list[Pending]:
        """Stop every `take`; returns what was still waiting."""
        with self._lock:
            self._closed = True
            left = [e for e in self._entries if e.stage is not Stage.RUNNING]
            self._entries = [e for e in self._entries if e.stage is Stage.RUNNING]
            self._lock.notify_all()
        return left

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(e.stage.value for e in self._entries))

    # --- under the lock ------------------------------------------------------------------

    def _count(self, source: str) -> int:
        return sum(1 for e in self._entries if e.source == source)

    def _most_represented(self, *, known: bool | None) -> str:
        """The source with the most entries (unknown before known, then the oldest)."""
        counts: Counter[str] = Counter()
        oldest: dict[str, int] = {}
        is_known: dict[str, bool] = {}
        for e in self._entries:
            if known is not None and e.known != known:
                continue
            counts[e.source] += 1
            oldest.setdefault(e.source, e.order)
            is_known[e.source] = e.known
        return max(counts, key=lambda s: (not is_known[s], counts[s], -oldest[s]))

    def _evict_from(self, source: str) -> Pending:
        """The oldest entry of `source` that no thread holds; if a thread holds all of
        them, the newest entry (the one just admitted: never one a thread holds)."""
        idle = [e for e in self._entries if e.source == source and e.stage is not Stage.RUNNING]
        if idle:
            victim = min(idle, key=lambda e: e.order)
        else:
            victim = max(
                (e for e in self._entries if e.stage is not Stage.RUNNING), key=lambda e: e.order
            )
        self._entries.remove(victim)
        return victim

    def _pick(self, reserved: bool) -> Pending | None:
        running = Counter(e.source for e in self._entries if e.stage is Stage.RUNNING)
        best: Pending | None = None
        best_rank: tuple[bool, int, int] | None = None
        for e in self._entries:
            if e.stage is not Stage.READY:
                continue
            if reserved and not e.known:
                continue
            if running[e.source] >= self.running_per_source:
                continue
            rank = (not e.known, running[e.source], e.order)
            if best_rank is None or rank < best_rank:
                best, best_rank = e, rank
        return best


#: Proven connections beyond twice the expected ones: room for a few senders the
#: topology does not name yet (a scale-up this worker has not heard of).
CONNECTION_SLACK = 8


class SenderPolicy:
    """Which identities may stream to this worker, on which stream indices, and how many
    proven connections the worker keeps (from the topology's in-degree).  Thread-safe."""

    def __init__(self, config: WorkerConfig, workers: int) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._workers = workers
        self._index = config.index()

    def resize(self, workers: int) -> None:
        with self._lock:
            self._workers = workers

    @property
    def workers(self) -> int:
        with self._lock:
            return self._workers

    def multiplicity(self, sender: str) -> int:
        """How many times the sender's topology picks this worker (0: it does not)."""
        workers = self.workers
        index = self._sender_index(sender, workers)
        if index is None:
            return 0
        workload = self._config.workload
        picked = topology.targets(workload.topology, index, workers, workload.mesh_degree)
        return picked.count(self._index)

    def streams_allowed(self, sender: str) -> int:
        """Stream indices 0..n-1 the sender may use: `streamsPerPeer` per time it picks
        this worker (at least once: a sender this worker does not expect yet may be
        one a scale-up added)."""
        return max(1, self.multiplicity(sender)) * self._config.workload.streams_per_peer

    def expected_streams(self) -> int:
        """Incoming streams the topology sends here: its in-degree times `streamsPerPeer`."""
        return (self.max_connections() - CONNECTION_SLACK) // 2

    def max_connections(self) -> int:
        """Proven incoming connections at once: twice the topology's in-degree times
        `streamsPerPeer` (room for reconnects that overlap), plus `CONNECTION_SLACK`."""
        workers = self.workers
        workload = self._config.workload
        if workers <= 1:
            in_degree = 0
        elif workload.topology == Topology.ALL_TO_ALL:
            in_degree = workers - 1
        elif workload.topology == Topology.MESH:
            in_degree = min(workload.mesh_degree, workers - 1)
        elif workload.topology == Topology.PAIRS:
            in_degree = 2
        else:
            in_degree = 1
        return 2 * in_degree * workload.streams_per_peer + CONNECTION_SLACK

    def expected_hosts(self, limit: int = 256) -> list[str]:
        """Hosts of the workers that stream to this one (the first `limit`)."""
        workers = self.workers
        peers = self._config.peer_list(workers)
        workload = self._config.workload
        hosts: list[str] = []
        for index in range(len(peers)):
            if index == self._index:
                continue
            picked = topology.targets(workload.topology, index, workers, workload.mesh_degree)
            if self._index in picked:
                hosts.append(split_host_port(peers[index], field="peers")[0])
                if len(hosts) >= limit:
                    break
        return hosts

    def _sender_index(self, sender: str, workers: int) -> int | None:
        peers = self._config.peer_list(workers)
        try:
            index = own_index(sender, peers)
        except ValueError:
            return None
        return index if index < workers else None
