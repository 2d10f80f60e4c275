"""SIGTERM reaches a worker through `StopRequest.wait`, in a real process with real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

_PROBE = textwrap.dedent(
    """
    import signal, sys, threading, time
    from w5xde.worker.stop_request import StopRequest

    stop = StopRequest()
    masks = []
    def record_mask():
        masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, ()))  # adds nothing
    later = threading.Thread(target=record_mask)
    later.start()
    later.join()
    no_handler = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    print(signal.SIGTERM in masks[0], no_handler, flush=True)
    if sys.argv[1] == "busy":
        time.sleep(1.0)  # not waiting: the SIGTERM must stay pending, not be lost
        print(stop.wait(0.0), stop.signum, flush=True)
    else:
        while not stop.wait(0.0005):
            pass
        print("stopped", stop.signum, flush=True)
    """
)


def _probe(mode: str) -> tuple[str, str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _PROBE, mode], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=10)
    assert process.returncode == 0, rest
    return first, rest.strip()


def test_a_stop_signal_is_taken_by_the_wait_in_a_thread_safe_way() -> None:
    """No Python handler (one that sets an Event can deadlock the main thread against
    itself) and the signal blocked in later threads (else its default action kills)."""
    first, rest = _probe("waiting")
    assert first == "True True"
    assert rest == f"stopped {int(signal.SIGTERM)}"


def test_a_stop_signal_that_arrives_between_waits_is_kept() -> None:
    first, rest = _probe("busy")
    assert first == "True True"
    assert rest == f"True {int(signal.SIGTERM)}"
