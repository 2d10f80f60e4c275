"""The `mesh` construction: regular, connected, an expander, crossing nodes, moving little.

Every property is checked on the real graph `targets()` gives the workers, for cluster
sizes up to the API's 1,000 workers.
"""

from __future__ import annotations

from collections import Counter, deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from w5xde.api.v1alpha1 import Topology
from w5xde.worker.topology import (
    DEFAULT_MESH_DEGREE,
    in_degrees,
    mesh_graph,
    mesh_targets,
    out_streams,
    stream_keys,
    targets,
)

SIZES = [2, 3, 9, 10, 12, 16, 17, 48, 64, 100, 257, 1000]


def reachable(graph: list[list[int]], start: int, *, reverse: bool = False) -> set[int]:
    edges = graph
    if reverse:
        edges = [[] for _ in graph]
        for source, peers in enumerate(graph):
            for peer in peers:
                edges[peer].append(source)
    seen = {start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for peer in edges[node]:
            if peer not in seen:
                seen.add(peer)
                queue.append(peer)
    return seen


def eccentricity(graph: list[list[int]], start: int) -> int:
    distance = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for peer in graph[node]:
            if peer not in distance:
                distance[peer] = distance[node] + 1
                queue.append(peer)
    assert len(distance) == len(graph)
    return max(distance.values())


def edges(graph: list[list[int]]) -> Counter[tuple[int, int]]:
    """Directed streams as a multiset (a peer picked by two cycles carries two streams)."""
    return Counter((source, peer) for source, peers in enumerate(graph) for peer in peers)


@pytest.mark.parametrize("workers", SIZES)
@pytest.mark.parametrize("degree", [2, 3, DEFAULT_MESH_DEGREE, 16])
def test_every_worker_sends_and_receives_the_same_number_of_streams(
    workers: int, degree: int
) -> None:
    graph = mesh_graph(workers, degree)
    expected = min(degree, workers - 1)
    assert [len(peers) for peers in graph] == [expected] * workers
    assert in_degrees(graph) == [expected] * workers
    for index, peers in enumerate(graph):
        assert index not in peers, "a worker never streams to itself"
        assert all(0 <= peer < workers for peer in peers)
        assert out_streams(Topology.MESH, workers, 1, degree) == len(peers)


@pytest.mark.parametrize("workers", SIZES)
def test_the_graph_is_strongly_connected(workers: int) -> None:
    graph = mesh_graph(workers, DEFAULT_MESH_DEGREE)
    everyone = set(range(workers))
    assert reachable(graph, 0) == everyone
    assert reachable(graph, 0, reverse=True) == everyone


@pytest.mark.parametrize("workers", [12, 100, 1000])
def test_each_worker_computes_its_own_row_of_the_same_graph(workers: int) -> None:
    graph = mesh_graph(workers, DEFAULT_MESH_DEGREE)
    for index in {0, 1, workers // 2, workers - 1}:
        assert targets(Topology.MESH, index, workers) == graph[index]
        assert mesh_targets(index, workers, DEFAULT_MESH_DEGREE) == graph[index]


@pytest.mark.parametrize(("workers", "bound"), [(100, 4), (1000, 6)])
def test_it_is_an_expander_a_few_hops_reach_everyone(workers: int, bound: int) -> None:
    """A ring of 1,000 has diameter 999; degree 8 random cycles reach everyone in ~log7(N)."""
    graph = mesh_graph(workers, DEFAULT_MESH_DEGREE)
    for start in range(0, workers, max(1, workers // 25)):
        assert eccentricity(graph, start) <= bound


@pytest.mark.parametrize("workers", [100, 1000])
def test_few_streams_go_to_the_same_peer_twice(workers: int) -> None:
    graph = mesh_graph(workers, DEFAULT_MESH_DEGREE)
    distinct = sum(len(set(peers)) for peers in graph)
    # Two of the 8 cycles pick the same successor with probability about 28 / N.
    assert distinct >= (1 - DEFAULT_MESH_DEGREE / workers) * workers * DEFAULT_MESH_DEGREE


@pytest.mark.parametrize("nodes", [2, 3, 4, 7, 10, 25])
@pytest.mark.parametrize("workers", [48, 200, 1000])
def test_links_cross_nodes_when_pods_are_spread(nodes: int, workers: int) -> None:
    """Placement as the spread StatefulSet tends to do it: pod i on node i mod K.

    The ring cycle (i -> i+1) always crosses; the hashed cycles are node-local about
    1/K of the time, like all-to-all on the same nodes.
    """
    graph = mesh_graph(workers, DEFAULT_MESH_DEGREE)
    local = sum(
        1 for source, peers in enumerate(graph) for peer in peers if peer % nodes == source % nodes
    )
    total = workers * DEFAULT_MESH_DEGREE
    ring_local = sum(
        1 for source in range(workers) if (source + 1) % workers % nodes == source % nodes
    )
    assert ring_local <= 1  # only the wrap-around link N-1 -> 0 can stay on one node
    all_to_all_local = (workers // nodes - 1) / (workers - 1)
    # The ring cycle is 1/8 of the streams and never local: the mesh is below all-to-all.
    assert (
        local / total <= all_to_all_local * (DEFAULT_MESH_DEGREE - 1) / DEFAULT_MESH_DEGREE + 0.04
    )


@pytest.mark.parametrize(
    ("before", "after"), [(12, 16), (16, 12), (100, 101), (999, 1000), (48, 64)]
)
def test_a_rescale_moves_one_stream_per_cycle_per_worker_added_or_removed(
    before: int, after: int
) -> None:
    degree = DEFAULT_MESH_DEGREE
    old, new = edges(mesh_graph(before, degree)), edges(mesh_graph(after, degree))
    staying = min(before, after)
    survivors_old = Counter({edge: count for edge, count in old.items() if max(edge) < staying})
    survivors_new = Counter({edge: count for edge, count in new.items() if max(edge) < staying})
    # Streams between workers that stay and that were cut by the change.
    moved = sum((survivors_old - survivors_new).values())
    changed_workers = abs(after - before)
    assert moved <= degree * changed_workers
    # Nothing else changes: every stream between staying workers that is not cut stays.
    assert sum(survivors_old.values()) - moved == sum((survivors_old & survivors_new).values())


def test_a_circulant_would_move_far_more() -> None:
    """What the construction avoids: offsets 1, 7, 11, ... mod N rewire every wrapping stream."""
    offsets = [1, 7, 11, 23, 53, 139, 373, 503]

    def circulant(workers: int) -> Counter[tuple[int, int]]:
        return Counter((i, (i + s) % workers) for i in range(workers) for s in offsets)

    old, new = circulant(999), circulant(1000)
    moved_circulant = sum((Counter({e: c for e, c in old.items() if max(e) < 999}) - new).values())
    mesh_old, mesh_new = edges(mesh_graph(999, 8)), edges(mesh_graph(1000, 8))
    moved_mesh = sum(
        (Counter({e: c for e, c in mesh_old.items() if max(e) < 999}) - mesh_new).values()
    )
    assert moved_mesh <= 8 < moved_circulant


@pytest.mark.parametrize("workers", [2, 5, 9])
def test_a_small_cluster_is_all_to_all(workers: int) -> None:
    graph = mesh_graph(workers, DEFAULT_MESH_DEGREE)
    for index, peers in enumerate(graph):
        assert sorted(peers) == [peer for peer in range(workers) if peer != index]


def test_the_other_topologies_are_unchanged() -> None:
    assert targets(Topology.RING, 3, 4) == [0]
    assert targets(Topology.ALL_TO_ALL, 0, 3) == [1, 2]
    assert targets(Topology.PAIRS, 4, 5) == [3]
    assert targets(Topology.MESH, 0, 1) == []
    assert targets(Topology.MESH, 5, 5) == []


@pytest.mark.parametrize(
    ("topology", "workers", "streams", "degree", "expected"),
    [
        (Topology.RING, 1000, 2, 8, 2),
        (Topology.PAIRS, 10, 1, 8, 1),
        (Topology.ALL_TO_ALL, 64, 2, 8, 126),
        (Topology.MESH, 1000, 4, 8, 32),
        (Topology.MESH, 5, 1, 8, 4),
        (Topology.MESH, 1, 1, 8, 0),
    ],
)
def test_out_streams(
    topology: Topology, workers: int, streams: int, degree: int, expected: int
) -> None:
    assert out_streams(topology, workers, streams, degree) == expected


def test_stream_keys_give_a_twice_picked_peer_twice_the_streams() -> None:
    peers = ["a:1", "b:1", "c:1", "d:1"]
    keys = stream_keys(peers, [1, 2, 1], streams_per_peer=2)
    assert len(keys) == 3 * 2
    assert {key for key in keys if key[0] == "b:1"} == {("b:1", k) for k in range(4)}
    assert {key for key in keys if key[0] == "c:1"} == {("c:1", 0), ("c:1", 1)}
    assert stream_keys(peers, [], 3) == set()


@pytest.mark.parametrize("workers", [12, 16, 48, 1000])
def test_every_worker_opens_degree_times_streams_per_peer(workers: int) -> None:
    peers = [f"w{index}:7070" for index in range(workers)]
    for index in (0, workers // 3, workers - 1):
        picked = targets(Topology.MESH, index, workers)
        assert len(stream_keys(peers, picked, 3)) == 3 * min(DEFAULT_MESH_DEGREE, workers - 1)


@settings(max_examples=60, deadline=None)
@given(workers=st.integers(2, 1000), degree=st.integers(2, 64), grow=st.integers(1, 40))
def test_any_size_and_degree_is_regular_connected_and_grows_gently(
    workers: int, degree: int, grow: int
) -> None:
    graph = mesh_graph(workers, degree)
    expected = min(degree, workers - 1)
    assert all(len(peers) == expected for peers in graph)
    assert in_degrees(graph) == [expected] * workers
    assert all(index not in peers for index, peers in enumerate(graph))
    assert reachable(graph, 0) == set(range(workers))
    bigger = edges(mesh_graph(min(1000, workers + grow), degree))
    if degree < workers - 1:
        cut = edges(graph) - bigger
        assert sum(cut.values()) <= degree * grow
