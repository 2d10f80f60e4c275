"""`compression.level: auto`: the pure policy that picks each stream's level.

Every `INTERVAL_S` the stream hands the policy one `Sample` of what it measured (raw
and wire bytes it produced, seconds it spent compressing and waiting on the network,
and the bytes the socket really drained) plus `Probe`s: a few of its own batches
compressed at every level of the ladder on the side, so the policy knows each
level's ratio and speed on *this* data without ever running at it.  From those it
predicts the raw rate each level would reach,

    predicted(L) = min(cpu(L), drain * ratio(L))

where `cpu(L)` is what the stream's CPU gives at level L (compression plus the rest of
its per-byte work) and `drain` the wire rate the link took while the stream was held
back by it (unknown, so unbounded, while the stream is not held back).  It moves to the
best level only when that level wins by `SWITCH_GAIN` (`LINK_SWITCH_GAIN` on a link that
holds the stream back, with CPU to spare at that level) in `CONFIRM` samples in a row and
the current level has been held for `MIN_HOLD_S`; then it checks the move against the
raw rate really delivered, and a move that lost `REVERT_LOSS` is undone and the level
barred for a cooling time that doubles on each failure.  So the level never changes
more than once per `MIN_HOLD_S` (> 1 s), and a wrong model cannot keep it on a bad level.

Pure: time is a parameter, no sockets, no zstd (the probes are made by `Prober`).
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import zstandard

from w5xde.worker.codec import stream_parameters

#: No compression (zstd's own level 0 would mean its default).
RAW = 0
#: The levels `auto` chooses from: raw, zstd's fast levels -3 and -1 (for a stream the
#: CPU holds back on a link too slow for raw: on the mixed pool -1 compresses 23 % faster
#: than 1 at 97 % of its ratio, as `zstd --adapt` does there), the fast level, the
#: default, and the strong ones a slow link can afford (a level is only chosen when its
#: predicted CPU rate keeps up with the link: on a fast link the strong ones never win).
#: Probing 9 and 12 costs about 1 % of a core (128 KiB each per 0.5 s, docs/decisions.md).
LADDER: tuple[int, ...] = (RAW, -3, -1, 1, 3, 6, 9, 12)
START_LEVEL = 1
#: How often the stream samples (and probes).
INTERVAL_S = 0.5
#: A level must predict this much more raw throughput than the current one...
SWITCH_GAIN = 0.08
#: ...or only this much while the link holds the stream back and the level would leave
#: its CPU rate LINK_HEADROOM above what the link takes: that gain is drain x ratio, and
#: a ratio is read from probes of the stream's own batches (a property of the data, not
#: a timing on a shared CPU), so it needs less margin against noise.  Measured: at
#: 100 Mbit/s levels 6 and 9 deliver 5 % more than level 1 on the mixed pool.
LINK_SWITCH_GAIN = 0.03
LINK_HEADROOM = 1.3
#: The link's measured rate is remembered this long while it does not hold the stream
#: back, and forgotten when the stream drains this much faster than it.
LINK_MEMORY_S = 30.0
LINK_FASTER = 1.1
#: Levels predicted within this of the best count as equal: the cheapest of them wins
#: (random data on a slow link: every level delivers the same, raw costs no CPU).
TIE = 0.02
#: A level at least this many times cheaper may replace one that delivers no more.
CHEAPER = 2.0
#: ...in this many samples in a row...
CONFIRM = 2
#: ...and the current level must have been held this long (never faster than 1/s).
MIN_HOLD_S = 2.0
#: After a move, the delivered raw rate is compared over this many samples...
VERIFY_SAMPLES = 4
#: ...and the move is undone if it lost this much against the rate before it.
REVERT_LOSS = 0.05
#: A level undone is barred this long, doubling per failure up to BAR_MAX_S.
BAR_FIRST_S = 8.0
BAR_MAX_S = 64.0
#: A change of the ratio by this share means other data: the bars are lifted.
DATA_CHANGE = 0.25
#: The stream counts as held back by the link when it waited for ACKs or credit this
#: share of the interval...
LINK_BOUND_SHARE = 0.2
#: ...or when its send queue is this full...
QUEUE_FULL = 0.5
#: ...or when the link drained less than this share of what the stream produced.
QUEUE_GROWTH = 0.9
#: Weight of a new probe in the running estimates: ratios follow the data quickly
#: (data that turns random), speeds are timed on a shared CPU and smoothed more.
RATIO_ALPHA = 0.7
ALPHA = 0.5
#: Bounds of the contention factor, and the raw bytes an interval needs to update it.
CONTENTION_MIN, CONTENTION_MAX = 0.05, 1.5
MIN_LIVE_BYTES = 256 * 1024
#: Bytes of the stream's own batches probed per interval.
PROBE_BYTES = 128 * 1024
#: ...in slices of at most this much of one batch, taken one batch in up to PROBE_SKIP.
PROBE_SLICE = 64 * 1024
PROBE_SKIP = 8


@dataclass(frozen=True, slots=True)
class Probe:
    """`raw` bytes of batches compressed at `level` into `out` bytes in `seconds`."""

    level: int
    raw: int
    out: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Sample:
    """What one stream measured over one interval."""

    now: float
    seconds: float
    raw_bytes: int
    wire_bytes: int
    compress_seconds: float
    #: Time in socket calls (sendmsg, waiting for ACKs): what the stream did not compute.
    network_seconds: float
    #: Payload bytes the socket really sent (written minus the send queue's growth).
    drained_bytes: int
    probes: Sequence[Probe] = ()
    #: Compression threads working for this stream (level: auto with threads > 1).
    parallel: float = 1.0
    #: Seconds the stream waited for ACKs or credit (its window or credit was full).
    wait_seconds: float = 0.0
    #: How full the socket's send queue was at the end (SIOCOUTQ / usable SO_SNDBUF).
    queue_fill: float = 0.0


@dataclass(slots=True)
class _Estimate:
    ratio: float = 0.0
    #: Raw bytes per CPU second of one thread.
    speed: float = 0.0

    def update(self, ratio: float, speed: float) -> None:
        self.ratio = (
            ratio if self.ratio == 0 else (1 - RATIO_ALPHA) * self.ratio + RATIO_ALPHA * ratio
        )
        self.speed = speed if self.speed == 0 else (1 - ALPHA) * self.speed + ALPHA * speed


@dataclass(frozen=True, slots=True)
class Decision:
    """A level change and why (logged, counted in the stream's figures)."""

    level: int
    previous: int
    reason: str


@dataclass
class LevelPolicy:
    """One stream's level under `auto`; call `observe` once per interval."""

    ladder: tuple[int, ...] = LADDER
    level: int = START_LEVEL
    estimates: dict[int, _Estimate] = field(default_factory=dict)
    #: The link's drain rate (wire bytes/s) as last measured while it held the stream
    #: back, remembered a while (`_learn_link`); None: unknown, so unbounded.
    drain_rate: float | None = None
    _link_at: float = float("-inf")
    changed_at: float = float("-inf")
    switches: int = 0
    _streak_level: int | None = None
    _streak: int = 0
    _barred_until: dict[int, float] = field(default_factory=dict)
    #: The current level's ratio when a bar was set: a bar holds only for that data.
    _barred_ratio: dict[int, float] = field(default_factory=dict)
    _bar_seconds: dict[int, float] = field(default_factory=dict)
    #: The last delivered rates, with how compressible the data was at each.
    _rates: list[tuple[float, float]] = field(default_factory=list)
    #: (level moved from, its raw rate before the move, samples seen since).
    _verifying: tuple[int, float, list[float]] | None = None
    #: `_data_ratio()` over the reference rates (lowest, highest): did the data change?
    _verify_data: tuple[float, float] = (0.0, 0.0)
    #: The current level's speed in the stream over its probe speed: a probe runs in a
    #: few milliseconds, mostly within one time slice, while the stream shares the CPU
    #: with everything else; every probe speed is scaled by this before it is used.
    contention: float = 1.0
    #: The current level's ratio in the stream over its probe ratio (the probes see a
    #: sample of the batches); every compressed level's probe ratio is scaled by it.
    ratio_bias: float = 1.0

    def __post_init__(self) -> None:
        for level in self.ladder:
            self.estimates.setdefault(level, _Estimate())

    def observe(self, sample: Sample) -> Decision | None:
        """Fold one interval in; a Decision when the stream should change its level."""
        for probe in sample.probes:
            if probe.raw > 0 and probe.out > 0 and probe.level in self.estimates:
                speed = probe.raw / max(probe.seconds, 1e-9)
                self.estimates[probe.level].update(probe.raw / probe.out, speed)
        if sample.seconds <= 0:
            return None
        rate = delivered_rate(sample)
        current = self.estimates[self.level]
        if sample.raw_bytes > 0 and sample.wire_bytes > 0 and sample.compress_seconds > 0:
            live_speed = sample.raw_bytes / sample.compress_seconds
            if current.speed > 0 and sample.raw_bytes >= MIN_LIVE_BYTES:
                seen = min(CONTENTION_MAX, max(CONTENTION_MIN, live_speed / current.speed))
                self.contention = (1 - ALPHA) * self.contention + ALPHA * seen
            if current.ratio > 0 and self.level != RAW:
                seen = (sample.raw_bytes / sample.wire_bytes) / current.ratio
                self.ratio_bias = (1 - ALPHA) * self.ratio_bias + ALPHA * seen
            elif current.ratio == 0:
                current.update(sample.raw_bytes / sample.wire_bytes, live_speed)
        if self.level == RAW:
            # No compressed ratio is measured while raw: the probes alone speak, so an
            # old bias (other data) must not make a level look better than it is.
            self.ratio_bias = (1 - ALPHA) * self.ratio_bias + ALPHA * 1.0
        link_bound = held_back(sample)
        self._learn_link(sample, link_bound)
        self._rates = [*self._rates[-(VERIFY_SAMPLES - 1) :], (rate, self._data_ratio())]
        verdict = self._verify(sample, rate)
        if verdict is not None:
            return verdict
        if sample.raw_bytes == 0:
            return None  # a stalled link: nothing to learn, keep the level
        best, _, why = self._best(sample)
        if best == self.level:
            self._streak_level, self._streak = None, 0
            return None
        if best == self._streak_level:
            self._streak += 1
        else:
            self._streak_level, self._streak = best, 1
        if self._streak < CONFIRM or sample.now - self.changed_at < MIN_HOLD_S:
            return None
        # The old level's reference is the best it delivered in the last samples, not
        # their mean: they may include the connection's start (a first move comes 1 s
        # in), and a mean of a ramp let a move to raw at 2 Gbit/s pass its check while
        # it delivered 11 % less than level 1 (make bench-links).
        before = max(rate for rate, _ in self._rates)
        self._verifying = (self.level, before, [])
        # The data the reference rate was measured on (it may already have been changing).
        self._verify_data = (
            min(data for _, data in self._rates),
            max(data for _, data in self._rates),
        )
        return self._move(best, sample.now, why)

    def _data_ratio(self) -> float:
        """How compressible the data is now: the best probe ratio of the ladder."""
        return max(estimate.ratio for estimate in self.estimates.values())

    def _learn_link(self, sample: Sample, link_bound: bool) -> None:
        """The link's capacity: measured while it holds the stream back, then remembered.

        Remembered for LINK_MEMORY_S while the stream is not held back (a move to raw
        on a 2 Gbit/s link is then not tried again and again), and forgotten at once
        when the stream drains faster than it (the link got faster).
        """
        drained = sample.drained_bytes / sample.seconds
        if link_bound:
            self.drain_rate, self._link_at = drained, sample.now
        elif self.drain_rate is not None and (
            drained > LINK_FASTER * self.drain_rate or sample.now - self._link_at > LINK_MEMORY_S
        ):
            self.drain_rate = None

    def predicted(self, level: int, sample: Sample) -> float:
        """Raw bytes/s the stream would reach at `level` (0 when not yet measured)."""
        cpu = self._cpu_rate(level, sample)
        if cpu <= 0 or self.drain_rate is None:
            return cpu
        estimate = self.estimates[level]
        ratio = 1.0 if level == RAW else max(1.0, estimate.ratio * self.ratio_bias)
        return min(cpu, self.drain_rate * ratio)

    def _cpu_rate(self, level: int, sample: Sample) -> float:
        """Raw bytes/s the stream's CPU would reach at `level`, whatever the link."""
        estimate = self.estimates[level]
        current = self.estimates[self.level]
        if estimate.ratio <= 0 or estimate.speed <= 0 or current.speed <= 0:
            return 0.0
        parallel = max(1.0, sample.parallel)
        raw = max(sample.raw_bytes, 1)
        contention = self.contention
        # CPU seconds per raw byte the stream spends beside compressing (framing, copies).
        busy = max(0.0, sample.seconds - sample.network_seconds) / raw
        other = max(0.0, busy - 1.0 / (current.speed * contention * parallel))
        return 1.0 / (1.0 / (estimate.speed * contention * parallel) + other)

    def _best(self, sample: Sample) -> tuple[int, float, str]:
        """(level, predicted gain, why): the level to move to, or the current one."""
        current = self.predicted(self.level, sample)
        if current <= 0:
            return self.level, 0.0, ""
        rates = {
            level: self.predicted(level, sample)
            for level in self.ladder
            if level == self.level or not self._barred(level, sample.now)
        }
        top = max(rates.values())
        near = [level for level, rate in rates.items() if rate >= top * (1.0 - TIE)]
        best = max(near, key=lambda level: self.estimates[level].speed)
        gain = rates[best] / current - 1.0
        link_bound = (
            self.drain_rate is not None
            and self._cpu_rate(best, sample) >= LINK_HEADROOM * rates[best]
        )
        if best != self.level and gain >= (LINK_SWITCH_GAIN if link_bound else SWITCH_GAIN):
            return best, gain, f"predicted +{gain:.0%}"
        if (
            best != self.level
            and gain >= -TIE
            and self.estimates[best].speed >= CHEAPER * self.estimates[self.level].speed
        ):
            return best, gain, "as fast for less CPU"
        return self.level, 0.0, ""

    def _barred(self, level: int, now: float) -> bool:
        """Barred after a failed move, while the data compresses as it did then."""
        if self._barred_until.get(level, float("-inf")) <= now:
            return False
        then = self._barred_ratio.get(level, 0.0)
        ratio = self.estimates[self.level].ratio
        return then > 0 and abs(ratio - then) <= DATA_CHANGE * then

    def _verify(self, sample: Sample, rate: float) -> Decision | None:
        """Undo a move that delivers less than the level before it delivered.

        The reference is the rate measured before the move, unless the data changed
        since (its compressibility moved by DATA_CHANGE): then a lower rate may be the
        data's doing, and the reference is the model's figure for the old level on
        today's data.
        """
        if self._verifying is None:
            return None
        now = sample.now
        previous, measured, seen = self._verifying
        seen.append(rate)
        if len(seen) < VERIFY_SAMPLES:
            return None
        self._verifying = None
        after = sum(seen[1:]) / max(1, len(seen) - 1)  # the first sample mixes both levels
        data = self._data_ratio()
        low, high = min(data, *self._verify_data), max(data, *self._verify_data)
        changed = high / max(low, 1e-9) - 1.0 > DATA_CHANGE
        before = (
            min(measured, self.predicted(previous, sample) or measured) if changed else measured
        )
        if before > 0 and after < (1.0 - REVERT_LOSS) * before:
            bar = min(BAR_MAX_S, self._bar_seconds.get(self.level, BAR_FIRST_S / 2) * 2)
            self._bar_seconds[self.level] = bar
            self._barred_until[self.level] = now + bar
            self._barred_ratio[self.level] = self.estimates[previous].ratio
            return self._move(
                previous, now, f"undone: {after / 1e6:.1f} < {before / 1e6:.1f} MB/s raw"
            )
        self._bar_seconds.pop(self.level, None)
        return None

    def _move(self, level: int, now: float, reason: str) -> Decision:
        decision = Decision(level, self.level, reason)
        self.level = level
        self.changed_at = now
        self.switches += 1
        self._streak_level, self._streak = None, 0
        return decision


def held_back(sample: Sample) -> bool:
    """Whether the link (or the peer) limited the stream over the interval.

    The socket's send queue is (nearly) full, or it grew (the stream produced faster
    than the link drained), or the stream waited for ACKs or credit a good share of the
    time.  Not the time spent in sendmsg itself: on a busy CPU that is the kernel's
    copying and would pass for a slow link.
    """
    return (
        sample.queue_fill >= QUEUE_FULL
        or sample.drained_bytes < QUEUE_GROWTH * sample.wire_bytes
        or sample.wait_seconds >= LINK_BOUND_SHARE * sample.seconds
    )


def delivered_rate(sample: Sample) -> float:
    """Raw bytes/s the link took: what the stream produced, less what piled up in its queue.

    Produced bytes alone would count a filling socket buffer (megabytes in the first
    second of a connection) as throughput and make every later level look worse.
    """
    if sample.seconds <= 0:
        return 0.0
    produced = sample.raw_bytes / sample.seconds
    if sample.wire_bytes <= 0:
        return produced
    return produced * min(1.0, sample.drained_bytes / sample.wire_bytes)


class Prober:
    """Compresses a few of the stream's own batches at every ladder level, on the side.

    `due` is a plain attribute the producer reads per batch (the only hot-path cost);
    `offer` copies a slice of one batch in every few (a random skip, so a source that
    repeats with a period is not sampled at the same phase every time) until
    `PROBE_BYTES`, then `run` measures them.
    """

    def __init__(
        self,
        ladder: tuple[int, ...] = LADDER,
        *,
        probe_bytes: int = PROBE_BYTES,
        clock: Callable[[], float] = time.perf_counter,
        stream: bool = False,
    ) -> None:
        self.ladder = ladder
        #: `context: stream`: each level's probe keeps its history across the sampled
        #: slices and flushes per slice, as the stream does, so it predicts stream ratios.
        self.stream = stream
        self.due = True
        self._probe_bytes = probe_bytes
        self._clock = clock
        self._batches: list[bytes] = []
        self._held = 0
        self._skip = 0
        self._random = random.Random(0x5EED)  # noqa: S311 - sampling, not secrets
        self._contexts = {
            level: zstandard.ZstdCompressor(compression_params=stream_parameters(level))
            if stream
            else zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
            for level in ladder
            if level != RAW
        }

    def offer(self, batch: bytes | memoryview) -> None:
        if self._skip > 0:
            self._skip -= 1
            return
        self._skip = self._random.randrange(PROBE_SKIP)
        piece = min(len(batch), PROBE_SLICE)
        start = self._random.randrange(len(batch) - piece + 1)
        self._batches.append(bytes(batch[start : start + piece]))
        self._held += piece
        if self._held >= self._probe_bytes:
            self.due = False

    def run(self) -> list[Probe]:
        """The probes of the batches offered since the last run; asks for new ones."""
        batches, self._batches, self._held = self._batches, [], 0
        self.due = True
        if not batches:
            return []
        raw = sum(len(batch) for batch in batches)
        probes = []
        clock = self._clock
        for level in self.ladder:
            started = clock()
            if level == RAW:
                for batch in batches:
                    zlib.crc32(batch)
                out = raw
            elif self.stream:
                frame = self._contexts[level].compressobj()
                flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
                out = sum(len(frame.compress(batch)) + len(frame.flush(flush)) for batch in batches)
            else:
                compress = self._contexts[level].compress
                # A batch that does not shrink goes raw: count it at its raw size.
                out = sum(min(len(compress(batch)), len(batch)) for batch in batches)
            probes.append(Probe(level, raw, out, clock() - started))
        return probes
