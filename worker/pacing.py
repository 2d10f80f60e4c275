"""The sender's rate limiter: a stream's bytes paced to a rate, with a bounded catch-up.

Pure (the clock is a parameter), so its arithmetic is tested without the wall clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: After a stall the stream may catch up on at most this much of the time it lost.
BURST_SECONDS = 1.0


class RateLimiter:
    """Paces one stream to `rate` bytes per second.

    `due` is when the bytes let through so far would have gone out at exactly the
    rate.  Each send moves it on by `bytes / rate`; the stream waits until the clock
    reaches it.  A stream that fell behind (a stall, a slow peer) may send ahead of
    the clock by at most `burst_seconds` worth of bytes, never more.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (0 means no limit: use no limiter)")
        self.rate = rate
        self.burst_seconds = BURST_SECONDS if burst_seconds is None else burst_seconds
        self._clock = clock
        self._due = clock()

    def take(self, nbytes: int) -> float:
        """Account for `nbytes` just sent; the seconds to wait before sending more."""
        now = self._clock()
        self._due = max(self._due, now - self.burst_seconds) + nbytes / self.rate
        return max(0.0, self._due - now)


class RateSplit:
    """A worker's rate limit (`rateLimitBytesPerSecond`) shared by its flowing streams.

    The worker re-splits on every change of the stream set and every half second (its
    sampler), counting only streams that make progress: a stalled or disconnected
    stream's share goes to the others, so a dead peer never lowers what the live ones
    may send.  Streams read `per_stream` before each pacing step.
    """

    def __init__(self, total: float) -> None:
        self.total = total
        self.per_stream = total

    def split(self, flowing: int) -> None:
        self.per_stream = self.total / max(1, flowing)
