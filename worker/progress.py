"""Whether one outgoing stream makes progress: the state its link reports.

A stream's thread writes its events here (connected, a frame became outstanding, an
ACK advanced, a connect failed); any other thread derives the state from them with
its own clock reading.  So a stream whose thread is blocked (in `sendall` to a frozen
peer) still reads as `Stalled` to the report, the balancing and the rate split: a
stuck stream cannot hide by being stuck.

Pure apart from the clock, which is a parameter, so the state machine is tested
without sockets or waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from w5xde.api.v1alpha1 import LinkState

#: A connected stream with frames outstanding and no ACK progress for this long is
#: `Stalled`; a stream failing to connect for this long is `Unreachable` or `Refused`
#: (before that it is `Connecting`: peers start at different times).
STALL_AFTER_S = 8.0
#: A stalled stream gives its connection up after this long without ACK progress and
#: reconnects (its window is replayed: nothing is lost).
RECONNECT_AFTER_S = 30.0
#: How much of an error message a link's state keeps.
MESSAGE_CHARS = 200

#: When several streams of one link disagree, the link reports the worst of them.
SEVERITY = {
    LinkState.FLOWING: 0,
    LinkState.CONNECTING: 1,
    LinkState.UNREACHABLE: 2,
    LinkState.REFUSED: 3,
    LinkState.STALLED: 4,
}


def stall_after_seconds(batch_bytes: int, rate_bytes_per_second: float) -> float:
    """The stall deadline of a stream: `STALL_AFTER_S`, or longer when its rate limit
    spaces frames so far apart that four of them take longer than that."""
    if rate_bytes_per_second <= 0:
        return STALL_AFTER_S
    return max(STALL_AFTER_S, 4 * batch_bytes / rate_bytes_per_second)


class StreamProgress:
    """Events of one stream (written by its thread) and the state they imply (any thread).

    Single writer; readers see plain attribute reads, each consistent on its own, which
    is all a state that is re-read every half second needs.
    """

    def __init__(
        self,
        stall_after: float = STALL_AFTER_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_after = stall_after
        self._clock = clock
        now = clock()
        self.connected = False
        #: Whether the stream has ever completed a handshake (readiness: see Worker.ready).
        self.ever_connected = False
        #: Since when frames wait for an ACK that does not come (None: none outstanding,
        #: or the last ACK came after they were sent).
        self._waiting_since: float | None = None
        #: When the stream started failing to connect (None: it has not failed since the
        #: last success), and how (refused by the peer, or not reached at all).
        self._failing_since: float | None = None
        self._refused = False
        self._since = now
        self.message = ""
        self._done = False
        #: Stalls this stream has come out of, by an ACK or by reconnecting (a metric).
        self.stalls = 0

    # --- events, from the stream's own thread ------------------------------------------

    def connect_failed(self, error: BaseException, *, refused: bool) -> None:
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        self._refused = refused
        self.message = str(error)[:MESSAGE_CHARS]

    def now_connected(self) -> None:
        now = self._clock()
        self.connected = True
        self.ever_connected = True
        self._failing_since = None
        self._refused = False
        self._waiting_since = None
        self._since = now
        self.message = ""

    def finished(self) -> None:
        """The stream ended as asked (drained at the end of a run, or resized away): its
        link did nothing wrong, so it reads `Flowing` from now on, not `Connecting`."""
        self.connected = False
        self._waiting_since = None
        self._failing_since = None
        self._done = True
        self.message = ""

    def disconnected(self, error: BaseException | None = None) -> None:
        if self.stalled():
            self.stalls += 1
        self.connected = False
        self._waiting_since = None
        self._since = self._clock()
        if error is not None:
            self.message = str(error)[:MESSAGE_CHARS]

    def outstanding(self) -> None:
        """A frame went into an empty window: the stall clock starts."""
        if self._waiting_since is None:
            self._waiting_since = self._clock()

    def acknowledged(self, window_empty: bool) -> bool:
        """An ACK advanced the window; True if the stream had been stalled until now."""
        was_stalled = self.stalled()
        self._waiting_since = None if window_empty else self._clock()
        if was_stalled:
            self.stalls += 1
            self.message = ""
        return was_stalled

    # --- the state, from any thread ----------------------------------------------------

    def silent_seconds(self, now: float | None = None) -> float:
        """How long outstanding frames have waited for ACK progress (0 if none wait)."""
        waiting = self._waiting_since
        if waiting is None or not self.connected:
            return 0.0
        return max(0.0, (self._clock() if now is None else now) - waiting)

    def stalled(self, now: float | None = None) -> bool:
        return self.silent_seconds(now) > self.stall_after

    def flowing(self, now: float | None = None) -> bool:
        """Connected and not stalled: a stream that balancing and the rate split count."""
        return self.connected and not self.stalled(now)

    def state(self, now: float | None = None) -> tuple[LinkState, float]:
        """(state, seconds in it)."""
        now = self._clock() if now is None else now
        if self._done:
            return LinkState.FLOWING, 0.0
        if self.connected:
            silent = self.silent_seconds(now)
            if silent > self.stall_after:
                return LinkState.STALLED, silent
            return LinkState.FLOWING, max(0.0, now - self._since)
        failing = self._failing_since
        if failing is not None and now - failing > self.stall_after:
            state = LinkState.REFUSED if self._refused else LinkState.UNREACHABLE
            return state, now - failing
        return LinkState.CONNECTING, max(
            0.0, now - (failing if failing is not None else self._since)
        )

    def state_message(self, now: float | None = None) -> str:
        state, _ = self.state(now)
        if state is LinkState.STALLED:
            return f"no acknowledgement for {self.silent_seconds(now):.0f} s with data outstanding"
        return "" if state is LinkState.FLOWING else self.message


def worst(states: list[tuple[LinkState, float, str]]) -> tuple[LinkState, float, str]:
    """The link's state from its streams': the most severe, the longest in it."""
    if not states:
        return LinkState.CONNECTING, 0.0, ""
    return max(states, key=lambda item: (SEVERITY[item[0]], item[1]))
