"""Refused connections: every one counted, at most one log line per interval.

A flood of bad connections must not become a flood of log lines (the log is the
first thing an operator reads, and writing it costs the worker CPU), yet none may go
unnoticed: the count is exact and exported as a metric.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

#: At most one line per this many seconds, per RefusalLog.
LOG_EVERY_S = 30.0


class RefusalLog:
    """Thread-safe; `total` is every refusal so far, by any reason."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        every: float = LOG_EVERY_S,
        level: int = logging.ERROR,
    ) -> None:
        self._logger = logger
        self._level = level
        self._what = what
        self._every = every
        self._lock = threading.Lock()
        self._since_log: Counter[str] = Counter()
        self._last_logged = -every
        self._by_reason: Counter[str] = Counter()
        self.total = 0

    def by_reason(self) -> dict[str, int]:
        """Every refusal so far, by reason (the metrics' `reason` label)."""
        with self._lock:
            return dict(self._by_reason)

    def refused(self, reason: str, detail: str = "") -> None:
        """Count one refusal; log it, with what was held back since, if the interval passed."""
        now = time.monotonic()
        with self._lock:
            self.total += 1
            self._by_reason[reason] += 1
            self._since_log[reason] += 1
            if now - self._last_logged < self._every:
                return
            counts = ", ".join(f"{count} {why}" for why, count in self._since_log.most_common())
            self._since_log.clear()
            self._last_logged = now
        self._logger.log(
            self._level,
            "%s refused (%s since the previous line, at most one per %.0f s)%s",
            self._what,
            counts,
            self._every,
            f"; latest: {detail}" if detail else "",
        )
