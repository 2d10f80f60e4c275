"""A worker's memory does not grow with its peers: one replay budget, one pool.

The budget is pure arithmetic; the black-hole test runs a real worker on loopback
against a peer that never acknowledges and reads the replay window it really holds.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from w5xde.api.v1alpha1 import Profile
from w5xde.local.run import free_ports
from w5xde.worker import protocol
from w5xde.worker.config import WorkerConfig
from w5xde.worker.handshake import Identity, server_handshake
from w5xde.worker.protocol import ProtocolError
from w5xde.worker.runtime import Worker
from w5xde.worker.sender import (
    BUDGET_BYTES,
    BUDGET_FRAMES,
    MIN_WINDOW_BYTES,
    MIN_WINDOW_FRAMES,
    ReplayBudget,
)
from w5xde.worker.sources import PoolSource, synthetic_pool

KEY = b"budget-key-0123456789abcdef"


def test_a_lone_stream_gets_the_whole_budget() -> None:
    budget = ReplayBudget()
    budget.share_among(1)
    assert (budget.window_bytes, budget.window_frames) == (BUDGET_BYTES, BUDGET_FRAMES)


@pytest.mark.parametrize("streams", [2, 8, 23, 63, 128])
def test_shares_add_up_to_the_budget(streams: int) -> None:
    budget = ReplayBudget()
    budget.share_among(streams)
    assert budget.window_bytes * streams <= max(BUDGET_BYTES, MIN_WINDOW_BYTES * streams)
    assert budget.window_frames * streams <= max(BUDGET_FRAMES, MIN_WINDOW_FRAMES * streams)
    assert budget.window_bytes >= MIN_WINDOW_BYTES


def test_no_streams_is_not_a_division_by_zero() -> None:
    budget = ReplayBudget()
    budget.share_among(0)
    assert budget.window_bytes == BUDGET_BYTES


def test_a_full_window_waits_but_an_empty_one_always_sends_one_frame() -> None:
    budget = ReplayBudget(total_bytes=1024 * 1024, total_frames=1000)
    budget.share_among(4)  # 256 KiB and 250 frames each
    assert not budget.full(0, 0)
    assert not budget.full(0, 10**9)  # nothing in flight: a huge batch may still go
    assert not budget.full(1, 256 * 1024 - 1)
    assert budget.full(1, 256 * 1024)
    assert budget.full(250, 10)
    assert not budget.full(249, 10)
    budget.share_among(1)  # a resize re-shares at once
    assert not budget.full(1, 256 * 1024)


def test_streams_share_one_pool_instead_of_copying_it() -> None:
    pool = synthetic_pool(Profile.MIXED, 256 * 1024)
    template = PoolSource(pool, 4096)
    first, second = template.at(0), template.at(8192)
    assert first.next_batch().obj is second.next_batch().obj  # the same bytes object
    assert bytes(template.at(8192).next_batch()) == pool[8192 : 8192 + 4096]
    # Offsets past the end wrap like the original source does.
    assert bytes(template.at(len(pool) + 100).next_batch()) == bytes(template.at(100).next_batch())


class BlackHole:
    """A peer that completes the handshake, reads everything and never acknowledges."""

    def __init__(self, context: protocol.Context = protocol.Context.STREAM) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._swallow, args=(sock,), daemon=True).start()

    def _swallow(self, sock: socket.socket) -> None:
        with sock:
            try:
                server_handshake(sock, Identity("budget", "hole-1", KEY), context=self.context)
                while chunk := sock.recv(1 << 20):
                    self.received += len(chunk)
            except (OSError, ProtocolError):
                return


@pytest.mark.parametrize("context", ["stream", "frame"])
def test_a_peer_that_never_acknowledges_holds_at_most_the_budget(context: str) -> None:
    """frame keeps payloads, stream keeps the raw batches (to recompress on a replay):
    either way the budget bounds what the window holds."""
    hole = BlackHole(protocol.Context[context.upper()])
    (own,) = free_ports(1)
    worker = Worker(
        WorkerConfig.model_validate(
            {
                "name": "b-0",
                "clusterId": "budget",
                "listenHost": "127.0.0.1",
                "metricsPort": 0,
                "peers": [f"127.0.0.1:{own}", f"127.0.0.1:{hole.port}"],
                "workload": {"batchBytes": 65536},
                "compression": {"level": 1, "context": context},
                "network": {"socketBufferBytes": 262144},
            }
        ),
        KEY,
    )
    worker.start()
    try:
        previous, settled_since = -1, time.monotonic()
        deadline = time.monotonic() + 60
        # The window grows until the budget is spent, then stays put.
        while time.monotonic() - settled_since < 1.0:
            assert time.monotonic() < deadline, "the window never stopped growing"
            held = worker.replay_bytes()
            if held != previous:
                previous, settled_since = held, time.monotonic()
            time.sleep(0.05)
        one_frame = 65536 + 1024
        assert BUDGET_BYTES - one_frame <= held <= BUDGET_BYTES + one_frame
        # It all went out (compressed, under stream); none of it was acknowledged.
        assert hole.received >= (held if context == "frame" else held // 4)
    finally:
        worker.stop(grace_seconds=0)
        hole.listener.close()
