"""Whether this operator replica is the one that folds, by kopf's own peering rule.

kopf pauses the handlers of every replica but the one with the highest priority; the
fold loop runs outside kopf's handlers, so it reads the same peering object and
applies the same rule: active unless a live peer has a priority at least as high.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

logger = logging.getLogger("w5xde.operator")

#: How long a peering decision is trusted before the object is read again.
RECHECK_SECONDS = 5.0


def is_active(peers: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule over the peering object's `status` (identity -> priority/lifetime/lastseen)."""
    for other, info in peers.items():
        if other == identity or not isinstance(info, Mapping):
            continue
        try:
            lastseen = datetime.fromisoformat(str(info.get("lastseen")))
            lifetime = timedelta(seconds=int(info.get("lifetime", 60)))
            other_priority = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=UTC)
        if lastseen + lifetime > now and other_priority >= priority:
            return False
    return True


class PeeringGate:
    """`await gate.active()`: cheap (cached), safe (a read error keeps the last answer)."""

    def __init__(
        self,
        read_peers: Callable[[], Mapping[str, Any]] | None,
        identity: str,
        priority: int,
    ) -> None:
        self._read_peers = read_peers  # None: standalone, always active
        self.identity = identity
        self.priority = priority
        self._active = read_peers is None
        self._checked = float("-inf")

    async def active(self) -> bool:
        if self._read_peers is None:
            return True
        if time.monotonic() - self._checked < RECHECK_SECONDS:
            return self._active
        self._checked = time.monotonic()
        try:
            peers = await asyncio.to_thread(self._read_peers)
        except Exception as error:  # noqa: BLE001 - keep the last decision, say why
            logger.warning("cannot read the peering object (%s); keeping the last decision", error)
            return self._active
        active = is_active(peers, self.identity, self.priority, datetime.now(UTC))
        if active != self._active:
            logger.warning("fold loop %s", "active" if active else "paused for a peer")
        self._active = active
        return active
