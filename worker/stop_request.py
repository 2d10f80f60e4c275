"""SIGTERM and SIGINT for the worker process, taken by waiting for them, not in a handler.

A Python handler that sets a `threading.Event` can deadlock the process: handlers run in
the main thread between bytecodes, and when the signal lands while that same thread is
inside `Event.wait()` holding the Event's (non-reentrant) lock, `set()` waits on it
forever. A worker then ignores its SIGTERM until the kubelet's SIGKILL, and its final
report is lost (CI saw it twice, docs/decisions.md). Blocked signals taken with
`sigtimedwait` involve no handler and no lock.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class StopRequest:
    """Blocks the stop signals in the calling thread, and so in every thread it starts
    later; only `wait` takes them. Create it before any thread is started: a thread with
    the signals unblocked and no handler would die of SIGTERM's default action."""

    def __init__(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        self.signum = 0

    def is_set(self) -> bool:
        return self.signum != 0 or self.wait(0.0)

    def wait(self, timeout: float | None = None) -> bool:
        """True once a stop signal arrived (now or before); False after `timeout` seconds."""
        if self.signum:
            return True
        if timeout is None:
            self.signum = signal.sigwait(STOP_SIGNALS)
            return True
        received = signal.sigtimedwait(STOP_SIGNALS, max(0.0, timeout))
        if received is not None:
            self.signum = received.si_signo
        return self.signum != 0
