"""Which peers a worker streams to, by topology, from its index and the worker count.

`mesh` is a bounded-degree graph for large clusters (docs/scale.md): the union of
`degree` directed Hamiltonian cycles over the worker indices.

- Cycle 0 is the ring (i -> i+1): StatefulSet pods i and i+1 are spread to different
  nodes first, so this cycle crosses nodes wherever the scheduler spread the pods.
- Cycle c >= 1 visits the workers in the order of a fixed 64-bit hash of (c, index)
  (splitmix64: the same on every worker, Python version and platform).  A random
  Hamiltonian cycle union is an expander with high probability: the diameter grows
  like log(N), and on K nodes about 1/K of the links are node-local, as in all-to-all.

Each cycle gives every worker exactly one successor and one predecessor, so every
worker sends and receives exactly `degree` streams (two cycles may pick the same peer:
that peer then gets two parallel streams).  Cycle 0 alone makes the graph strongly
connected.  Because a cycle's order depends only on the indices present, adding
worker N inserts it into each cycle between two workers: a rescale by one worker
redirects exactly one existing stream per cycle (and removes or adds the streams of
the worker that came or went), where a circulant `i + s mod N` would move every
stream that wraps around.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from w5xde.api.v1alpha1 import Topology

#: `workload.meshDegree` when the spec does not say.
DEFAULT_MESH_DEGREE = 8

_MASK = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def cycle_key(cycle: int, index: int) -> tuple[int, int]:
    """Where `index` sits in cycle `cycle` (ties, which a 64-bit hash makes unlikely, by index)."""
    if cycle == 0:
        return (index, index)
    return (_splitmix64((cycle << 32) | index), index)


def cycle_order(cycle: int, workers: int) -> list[int]:
    """The order in which cycle `cycle` visits workers 0..workers-1."""
    return sorted(range(workers), key=lambda index: cycle_key(cycle, index))


def _successor(cycle: int, index: int, workers: int) -> int:
    """The next worker after `index` in cycle `cycle`, in O(workers) without sorting."""
    if cycle == 0:
        return (index + 1) % workers
    mine = cycle_key(cycle, index)
    after: tuple[int, int] | None = None
    first: tuple[int, int] | None = None
    for other in range(workers):
        key = cycle_key(cycle, other)
        if first is None or key < first:
            first = key
        if key > mine and (after is None or key < after):
            after = key
    chosen = after if after is not None else first
    assert chosen is not None
    return chosen[1]


def mesh_targets(index: int, workers: int, degree: int) -> list[int]:
    """The `degree` successors of `index` (one per cycle; all others when degree >= workers-1)."""
    if workers <= 1 or index >= workers:
        return []
    if degree >= workers - 1:
        return [peer for peer in range(workers) if peer != index]
    return [_successor(cycle, index, workers) for cycle in range(degree)]


def mesh_graph(workers: int, degree: int) -> list[list[int]]:
    """Every worker's `mesh_targets` at once (one sort per cycle): for tests and docs."""
    if workers <= 1:
        return [[] for _ in range(workers)]
    if degree >= workers - 1:
        return [mesh_targets(index, workers, degree) for index in range(workers)]
    graph: list[list[int]] = [[] for _ in range(workers)]
    for cycle in range(degree):
        order = cycle_order(cycle, workers)
        for position, index in enumerate(order):
            graph[index].append(order[(position + 1) % workers])
    return graph


def targets(
    topology: Topology, index: int, workers: int, mesh_degree: int = DEFAULT_MESH_DEGREE
) -> list[int]:
    """Peer indexes this worker sends to (a peer twice gets two streams); empty when alone."""
    if workers <= 1 or index >= workers:
        return []
    if topology == Topology.RING:
        return [(index + 1) % workers]
    if topology == Topology.ALL_TO_ALL:
        return [peer for peer in range(workers) if peer != index]
    if topology == Topology.MESH:
        return mesh_targets(index, workers, mesh_degree)
    partner = index ^ 1
    # With an odd count the last worker has no partner of its own and joins the pair before it.
    return [partner] if partner < workers else [index - 1]


def out_streams(topology: Topology, workers: int, streams_per_peer: int, mesh_degree: int) -> int:
    """Outgoing streams of one worker at most (the figure the API bounds)."""
    if workers <= 1:
        return 0
    if topology == Topology.ALL_TO_ALL:
        peers = workers - 1
    elif topology == Topology.MESH:
        peers = min(mesh_degree, workers - 1)
    else:
        peers = 1
    return peers * streams_per_peer


def in_degrees(graph: Sequence[Sequence[int]]) -> list[int]:
    """Incoming streams per worker of a graph from `mesh_graph` (or any targets lists)."""
    counts = [0] * len(graph)
    for peers in graph:
        for peer in peers:
            counts[peer] += 1
    return counts


def stream_keys(
    peers: Sequence[str], picked: Sequence[int], streams_per_peer: int
) -> set[tuple[str, int]]:
    """The outgoing streams, as (peer address, stream index), for the peers `targets` picked.

    A peer picked twice (two mesh cycles chose it) gets twice `streams_per_peer` streams,
    so the worker still sends exactly len(picked) x streams_per_peer streams.
    """
    return {
        (peers[target], stream)
        for target, count in Counter(picked).items()
        for stream in range(count * streams_per_peer)
    }
