"""What a sender stream adapts to its link: its level (`auto`), its send size, its buffers.

The stream calls `tick` about every `level_policy.INTERVAL_S` (after a coalesced write,
never per batch) and counts its produced batches in plain attributes; everything that
measures or decides lives here, so sender.py keeps only the hooks.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from w5xde.api.v1alpha1 import (
    AUTO_BUFFER_CAP_BYTES,
    CompressionContext,
    CompressionSpec,
    NetworkSpec,
)
from w5xde.worker import link_sizing
from w5xde.worker.counters import SendCounters
from w5xde.worker.level_policy import (
    INTERVAL_S,
    RAW,
    LevelPolicy,
    Prober,
    Sample,
    held_back,
)
from w5xde.worker.producer import BatchProducer, compression_threads

log = logging.getLogger("w5xde.sender")


@dataclass(frozen=True, slots=True)
class LinkFigures:
    """One stream's tuning, as the report and the metrics show it."""

    level: int
    auto: bool
    raw_batches: int
    compressed_batches: int
    level_switches: int
    send_bytes: int
    buffer_floor: int


class StreamTuner:
    """Per-stream measurements and decisions; the stream thread is its only writer."""

    def __init__(
        self,
        producer: BatchProducer,
        compression: CompressionSpec,
        network: NetworkSpec,
        batch_bytes: int,
        counters: SendCounters,
    ) -> None:
        self._producer = producer
        self._network = network
        self._batch_bytes = batch_bytes
        self.policy = LevelPolicy() if compression.auto_level else None
        self.level = self.policy.level if self.policy else compression.fixed_level
        if compression.codec.value == "none":
            self.level = RAW
        self._prober = (
            Prober(stream=compression.context == CompressionContext.STREAM) if self.policy else None
        )
        self._parallel = float(
            min(compression_threads(compression), os.cpu_count() or 1)
            if getattr(producer, "threads", 1) > 1
            else 1
        )
        if self.policy is not None:
            producer.set_level(self.level)
            producer.sampler = self._prober
        #: The stream's counters: the one owner of every figure the tuner reads (produced
        #: bytes, raw and compressed batches, seconds waited); the tuner keeps none.
        self._counters = counters
        #: Bytes gathered before one sendmsg (link_sizing.send_bytes).
        self.send_bytes = link_sizing.send_bytes(None, batch_bytes)
        self.buffer_floor = 0
        self.next_tick = time.monotonic() + INTERVAL_S
        self._last = (time.monotonic(), 0, 0, 0, 0.0, 0.0, 0)
        self._last_wait = 0.0

    def connected(self, sock: socket.socket, counters: SendCounters) -> None:
        """A new connection: measure from here (its send queue starts empty)."""
        self.buffer_floor = 0
        self._last = (
            time.monotonic(),
            counters.wire_bytes,
            counters.produced_raw_bytes,
            counters.produced_payload_bytes,
            counters.compression_seconds,
            counters.network_seconds,
            link_sizing.unsent_bytes(sock),
        )

    def tick(self, sock: socket.socket, counters: SendCounters) -> None:
        """One interval's measurements: maybe a new level, send size and buffer floor."""
        now = time.monotonic()
        self.next_tick = now + INTERVAL_S
        started, wire0, raw0, payload0, compress0, network0, queue0 = self._last
        queue = link_sizing.unsent_bytes(sock)
        self._last = (
            now,
            counters.wire_bytes,
            counters.produced_raw_bytes,
            counters.produced_payload_bytes,
            counters.compression_seconds,
            counters.network_seconds,
            queue,
        )
        seconds = now - started
        if seconds <= 0:
            return
        drained = max(0, counters.wire_bytes - wire0 - (queue - queue0))
        network_seconds = counters.network_seconds - network0
        waited = counters.wait_seconds
        wait_seconds, self._last_wait = waited - self._last_wait, waited
        # The kernel reports twice the buffer it grants; about half of that holds payload.
        usable = max(1, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2)
        sample = Sample(
            now=now,
            seconds=seconds,
            raw_bytes=counters.produced_raw_bytes - raw0,
            wire_bytes=counters.produced_payload_bytes - payload0,
            compress_seconds=counters.compression_seconds - compress0,
            network_seconds=network_seconds,
            drained_bytes=drained,
            probes=self._prober.run() if self._prober is not None else (),
            parallel=self._parallel,
            wait_seconds=wait_seconds,
            queue_fill=queue / usable,
        )
        drain_rate = drained / seconds if held_back(sample) else None
        self.send_bytes = link_sizing.send_bytes(drain_rate, self._batch_bytes)
        if self._network.auto_buffers and drain_rate:
            self._raise_buffer_floor(sock, drain_rate)
        if self.policy is None:
            return
        decision = self.policy.observe(sample)
        if decision is not None:
            self.level = decision.level
            self._producer.set_level(decision.level)
            log.info("level %s -> %s (%s)", decision.previous, decision.level, decision.reason)

    def _raise_buffer_floor(self, sock: socket.socket, drain_rate: float) -> None:
        """`socketBufferBytes: auto`: autotuning stays on until it falls below the floor."""
        floor = link_sizing.buffer_floor(
            drain_rate, link_sizing.rtt_seconds(sock), AUTO_BUFFER_CAP_BYTES
        )
        if floor <= self.buffer_floor:
            return
        # The kernel reports twice what it was given; setting a size ends autotuning on
        # this socket, so it is done only when autotuning stays below what the link needs.
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * floor:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, floor)
        self.buffer_floor = floor

    def figures(self) -> LinkFigures:
        return LinkFigures(
            level=self.level,
            auto=self.policy is not None,
            raw_batches=self._counters.raw_batches,
            compressed_batches=self._counters.compressed_batches,
            level_switches=self.policy.switches if self.policy else 0,
            send_bytes=self.send_bytes,
            buffer_floor=self.buffer_floor,
        )
