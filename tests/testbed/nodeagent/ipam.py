"""Pod IPs: each node hands out addresses from its own /24 of the bridge's /16.

Addresses go round the range rather than lowest-free first, so a pod replaced
during a roll does not get the address its predecessor had a moment ago, while
peers may still hold that address's old MAC in their neighbour tables.
"""

from __future__ import annotations

import threading

from testbed.paths import NODE_NAMES

FIRST_HOST, LAST_HOST = 2, 254


class Ipam:
    def __init__(self, nodes: tuple[str, ...] = NODE_NAMES, first_index: int = 0) -> None:
        self._subnet = {name: first_index + index + 1 for index, name in enumerate(nodes)}
        self._used: set[str] = set()
        self._next = dict.fromkeys(nodes, FIRST_HOST)
        self._lock = threading.Lock()

    def allocate(self, node: str) -> str:
        subnet = self._subnet[node]
        size = LAST_HOST - FIRST_HOST + 1
        with self._lock:
            start = self._next[node]
            for step in range(size):
                host = FIRST_HOST + (start - FIRST_HOST + step) % size
                address = f"10.244.{subnet}.{host}"
                if address not in self._used:
                    self._used.add(address)
                    self._next[node] = FIRST_HOST + (host - FIRST_HOST + 1) % size
                    return address
        raise RuntimeError(f"node {node}: no pod IP left")

    def release(self, node: str, address: str) -> None:
        del node
        with self._lock:
            self._used.discard(address)
