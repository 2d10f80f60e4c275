"""Which peers a worker streams to, by topology, from its index and the worker count."""

from __future__ import annotations

from w5xde.api.v1alpha1 import Topology


def targets(topology: Topology, index: int, workers: int) -> list[int]:
    """Peer indexes this worker sends to; empty when it is alone."""
    if workers <= 1 or index >= workers:
        return []
    if topology == Topology.RING:
        return [(index + 1) % workers]
    if topology == Topology.ALL_TO_ALL:
        return [peer for peer in range(workers) if peer != index]
    partner = index ^ 1
    # With an odd count the last worker has no partner of its own and joins the pair before it.
    return [partner] if partner < workers else [index - 1]
