"""Pod IPs: each node hands out addresses from its own /24 of the bridge's /16."""

from __future__ import annotations

import threading

from testbed.paths import NODE_NAMES


class Ipam:
    def __init__(self, nodes: tuple[str, ...] = NODE_NAMES, first_index: int = 0) -> None:
        self._subnet = {name: first_index + index + 1 for index, name in enumerate(nodes)}
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def allocate(self, node: str) -> str:
        subnet = self._subnet[node]
        with self._lock:
            for host in range(2, 255):
                address = f"10.244.{subnet}.{host}"
                if address not in self._used:
                    self._used.add(address)
                    return address
        raise RuntimeError(f"node {node}: no pod IP left")

    def release(self, node: str, address: str) -> None:
        del node
        with self._lock:
            self._used.discard(address)
