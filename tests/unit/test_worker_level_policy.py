"""`level: auto`: the pure policy (worker/level_policy.py) under made-up measurements.

The clock is the samples' `now`: nothing here waits or times anything.
"""

from __future__ import annotations

import itertools
import os

import pytest

from w5xde.api.v1alpha1 import CompressionSpec, Profile
from w5xde.worker.codec import RAW_LEVEL, BatchCompressor, BatchDecompressor
from w5xde.worker.level_policy import (
    INTERVAL_S,
    LINK_MEMORY_S,
    MIN_HOLD_S,
    PROBE_SKIP,
    RAW,
    LevelPolicy,
    Probe,
    Prober,
    Sample,
    delivered_rate,
    held_back,
)
from w5xde.worker.protocol import FLAG_RAW_FALLBACK, CodecId
from w5xde.worker.sources import PoolSource, synthetic_pool

MB = 1_000_000
#: Ratio and single-thread speed (raw MB per CPU second) per level, roughly the mixed pool.
TEXT_LIKE = {RAW: (1.0, 2000.0), 1: (2.0, 300.0), 3: (2.15, 150.0), 6: (2.25, 70.0)}
RANDOM_LIKE = {RAW: (1.0, 2000.0), 1: (1.0, 900.0), 3: (1.0, 400.0), 6: (1.0, 200.0)}


def probes(table: dict[int, tuple[float, float]], raw: int = 64 * 1024) -> list[Probe]:
    return [
        Probe(level, raw, int(raw / ratio), raw / (speed * MB))
        for level, (ratio, speed) in table.items()
    ]


def simulate(
    policy: LevelPolicy,
    *,
    link_mb: float | None,
    table: dict[int, tuple[float, float]],
    start: float = 0.0,
    seconds: float = 10.0,
    other_s_per_mb: float = 0.0005,
) -> list[tuple[float, int]]:
    """Feed the policy what a stream at its current level would measure; (time, level) moves.

    The stream's CPU does compression plus `other_s_per_mb` of other work per raw MB; a
    link of `link_mb` wire MB/s holds it back when it is slower than that (None: no limit).
    """
    moves = []
    now = start
    while now < start + seconds:
        now += INTERVAL_S
        ratio, speed = table[policy.level]
        cpu_rate = 1.0 / (1.0 / (speed * MB) + other_s_per_mb / MB)
        rate = cpu_rate if link_mb is None else min(cpu_rate, link_mb * MB * ratio)
        raw = int(rate * INTERVAL_S)
        wire = int(raw / ratio)
        compress = raw / (speed * MB)
        held = INTERVAL_S - raw / cpu_rate
        decision = policy.observe(
            Sample(
                now=now,
                seconds=INTERVAL_S,
                raw_bytes=raw,
                wire_bytes=wire,
                compress_seconds=compress,
                network_seconds=max(0.0, held),
                drained_bytes=wire,
                probes=probes(table),
                queue_fill=1.0 if held > 0.01 else 0.1,
            )
        )
        if decision is not None:
            moves.append((now, decision.level))
    return moves


def test_a_slow_link_gets_the_strong_level() -> None:
    policy = LevelPolicy()
    simulate(policy, link_mb=12.5, table=TEXT_LIKE)
    assert policy.level == 6


#: The mixed pool as `make bench-links` measured it at 100 Mbit/s: the strong levels
#: compress only about 5 % better than level 1, and the CPU affords all of them.
MIXED_POOL = {
    RAW: (1.0, 2000.0),
    1: (1.94, 300.0),
    3: (1.99, 150.0),
    6: (2.04, 70.0),
    9: (2.05, 40.0),
    12: (2.06, 12.0),
}


def test_a_slow_link_takes_a_small_ratio_gain_the_cpu_can_afford() -> None:
    # Link-bound at 12.5 MB/s wire: level 1 delivers 24.3 MB/s raw, level 6 25.5 (+5 %)
    # with its CPU at 70: worth taking (a ratio read from probes is no timing noise)...
    policy = LevelPolicy(ladder=tuple(MIXED_POOL))
    moves = simulate(policy, link_mb=12.5, table=MIXED_POOL, seconds=30)
    assert policy.level in (6, 9)
    assert len(moves) <= 2
    # ...but not where that level's CPU rate would be what limits it: level 12 at 12 MB/s
    # of CPU cannot keep up with a 12.5 MB/s link at ratio 2.06 (25.8 MB/s raw).
    assert all(level != 12 for _, level in moves)
    # A level whose CPU barely keeps up with the link (28 MB/s against the 25.6 the link
    # would take at its ratio) is not taken for a few percent: any contention would
    # make it the bottleneck.
    tight = {RAW: (1.0, 2000.0), 1: (1.94, 300.0), 9: (2.05, 28.0)}
    policy = LevelPolicy(ladder=tuple(tight))
    simulate(policy, link_mb=12.5, table=tight, seconds=30)
    assert policy.level == 1


def test_without_a_link_holding_it_back_a_small_gain_is_not_worth_a_move() -> None:
    # CPU-bound (no link limit): level 1 vs a level predicted 5 % faster is timing noise.
    table = {RAW: (1.0, 126.0), 1: (1.94, 120.0), 3: (1.99, 60.0)}
    policy = LevelPolicy(ladder=tuple(table))
    simulate(policy, link_mb=None, table=table, seconds=30)
    assert policy.level == 1


def test_a_cpu_bound_stream_on_a_link_too_slow_for_raw_takes_a_fast_level() -> None:
    # 2 Gbit/s (250 MB/s wire): raw is held to 250, level 1's CPU gives 280; level -1
    # compresses 23 % faster at 97 % of level 1's ratio (the mixed pool), so it wins.
    table = {RAW: (1.0, 2000.0), -3: (1.84, 470.0), -1: (1.88, 420.0), 1: (1.94, 340.0)}
    policy = LevelPolicy(ladder=tuple(table))
    simulate(policy, link_mb=250, table=table, seconds=30, other_s_per_mb=0.0007)
    assert policy.level in (-3, -1)


def test_a_fast_link_with_a_busy_cpu_gets_no_compression() -> None:
    policy = LevelPolicy()
    simulate(policy, link_mb=None, table=TEXT_LIKE)
    assert policy.level == RAW


def test_a_middle_link_keeps_the_fast_level() -> None:
    # 50 MB/s wire: level 1 gives 100 MB/s raw (CPU allows 260), level 3 about 107 (CPU
    # 130), level 6 about 60: within the hysteresis, so the level stays where it is.
    policy = LevelPolicy()
    simulate(policy, link_mb=50, table=TEXT_LIKE)
    assert policy.level in (1, 3)
    assert policy.switches <= 1


def test_incompressible_data_goes_raw_and_text_brings_compression_back() -> None:
    policy = LevelPolicy()
    simulate(policy, link_mb=12.5, table=TEXT_LIKE)
    assert policy.level == 6
    moves = simulate(policy, link_mb=12.5, table=RANDOM_LIKE, start=10.0)
    assert policy.level == RAW
    # It follows within a few seconds of the switch.
    assert moves[0][0] - 10.0 <= 3.0
    simulate(policy, link_mb=12.5, table=TEXT_LIKE, start=20.0)
    assert policy.level == 6


@pytest.mark.parametrize("link_mb", [None, 12.5, 50.0, 250.0])
def test_the_level_never_changes_twice_within_a_second(link_mb: float | None) -> None:
    policy = LevelPolicy()
    moves = simulate(policy, link_mb=link_mb, table=TEXT_LIKE, seconds=60)
    moves += simulate(policy, link_mb=link_mb, table=RANDOM_LIKE, start=60, seconds=60)
    times = [at for at, _ in moves]
    assert all(later - earlier >= MIN_HOLD_S for earlier, later in itertools.pairwise(times))
    assert MIN_HOLD_S > 1.0


def _choking_receiver(policy: LevelPolicy, now: float) -> Sample:
    """Level 1: CPU-bound at 100 MB/s raw.  Raw: the receiver chokes on the bytes and
    takes 50 MB/s, which the model could not know before trying."""
    if policy.level == 1:
        raw = 50 * MB
        return Sample(now, INTERVAL_S, raw, raw // 2, raw / (300 * MB), 0.0, raw // 2,
                      probes(TEXT_LIKE))  # fmt: skip
    raw = 25 * MB
    return Sample(now, INTERVAL_S, raw, raw, raw / (2000 * MB), 0.45, raw, probes(TEXT_LIKE),
                  queue_fill=1.0)  # fmt: skip


def test_a_move_that_delivers_less_is_undone_and_the_level_barred() -> None:
    policy = LevelPolicy()
    now = 0.0
    decisions = []
    while now < 20 and not any("undone" in item.reason for item in decisions):
        now += INTERVAL_S
        decision = policy.observe(_choking_receiver(policy, now))
        if decision is not None:
            decisions.append(decision)
    assert [item.level for item in decisions] == [RAW, 1]
    # Barred: the model still prefers raw at level 1, but the level stays for a while.
    for _ in range(12):
        now += INTERVAL_S
        assert policy.observe(_choking_receiver(policy, now)) is None
    assert policy.level == 1


def test_a_stalled_link_keeps_the_level() -> None:
    policy = LevelPolicy()
    simulate(policy, link_mb=12.5, table=TEXT_LIKE)
    level, switches = policy.level, policy.switches
    for step in range(20):
        stalled = Sample(
            now=20.0 + step * INTERVAL_S,
            seconds=INTERVAL_S,
            raw_bytes=0,
            wire_bytes=0,
            compress_seconds=0.0,
            network_seconds=INTERVAL_S,
            drained_bytes=0,
            probes=probes(TEXT_LIKE),
            queue_fill=1.0,
        )
        assert policy.observe(stalled) is None
    assert (policy.level, policy.switches) == (level, switches)


def test_the_delivered_rate_discounts_a_filling_queue() -> None:
    filling = Sample(0, 1.0, 40 * MB, 20 * MB, 0.1, 0.0, drained_bytes=5 * MB)
    assert delivered_rate(filling) == pytest.approx(10 * MB)
    steady = Sample(0, 1.0, 40 * MB, 20 * MB, 0.1, 0.0, drained_bytes=20 * MB)
    assert delivered_rate(steady) == pytest.approx(40 * MB)


def test_the_prober_measures_its_batches_at_every_level() -> None:
    ticks = iter(range(100))
    prober = Prober(probe_bytes=32 * 1024, clock=lambda: float(next(ticks)))
    text = synthetic_pool(Profile.TEXT, 64 * 1024)
    offered = 0
    while prober.due:
        prober.offer(memoryview(text)[offered % 4096 :])
        offered += 1
    # One batch in a few (random skips) is copied, until 32 KiB are held.
    assert 1 <= offered <= 1 + PROBE_SKIP
    found = {probe.level: probe for probe in prober.run()}
    assert prober.due
    assert set(found) == {RAW, -3, -1, 1, 3, 6, 9, 12}
    assert found[RAW].out == found[RAW].raw
    assert found[6].out < found[1].out < found[-3].out < found[RAW].out
    assert all(probe.seconds == 1.0 for probe in found.values())
    assert prober.run() == []


def test_stream_probes_predict_the_stream_s_ratio_not_a_frame_s() -> None:
    """Under `context: stream` each level's probe keeps its history across the sampled
    slices: on data that repeats across batches (JSON logs, 3.6 KB batches) it sees what
    the stream gains, which independent frames cannot."""
    logs = synthetic_pool(Profile.JSON_LOGS, 512 * 1024)
    source = PoolSource(logs, 3600)
    made = {}
    for stream in (False, True):
        prober = Prober(probe_bytes=64 * 1024, stream=stream)
        rng = iter(range(10**6))
        while prober.due:
            next(rng)
            prober.offer(source.next_batch())
        made[stream] = {probe.level: probe.raw / probe.out for probe in prober.run()}
    assert made[True][1] > 1.1 * made[False][1]
    assert made[True][RAW] == made[False][RAW] == 1.0


def test_while_raw_an_old_ratio_bias_fades_so_raw_is_not_left_for_nothing() -> None:
    """Text compressed better in the stream than its probes said (bias > 1); then random
    data comes and auto goes raw.  While raw nothing measures a compressed ratio, so
    the bias must fade, or level 1 would look 10 % better than raw on random data."""
    policy = LevelPolicy(level=RAW)
    policy.ratio_bias = 1.3
    for step in range(6):
        policy.observe(Sample(step * 0.5, 0.5, MB, MB, 0.0, 0.4, drained_bytes=MB))
    assert policy.ratio_bias < 1.03


def test_a_batch_that_does_not_shrink_goes_raw_flagged() -> None:
    compressor = BatchCompressor(CompressionSpec(level=3))
    noise = os.urandom(8192)
    payload, crc, codec, flags = compressor.compress_frame(noise)
    assert (bytes(payload), codec, flags) == (noise, CodecId.NONE, FLAG_RAW_FALLBACK)
    assert BatchDecompressor().decompress(CodecId.NONE, memoryview(noise), len(noise), crc) == len(
        noise
    )
    text = synthetic_pool(Profile.TEXT, 8192)
    payload, crc, codec, flags = compressor.compress_frame(text)
    assert (codec, flags, crc) == (CodecId.ZSTD, 0, 0)
    assert len(payload) < len(text)
    compressor.set_level(RAW_LEVEL)
    payload, _, codec, flags = compressor.compress_frame(text)
    assert (bytes(payload), codec, flags) == (text, CodecId.NONE, 0)


@pytest.mark.parametrize(
    ("fill", "drained", "waited", "held"),
    [
        (0.9, 100, 0.0, True),  # the send queue is full
        (0.1, 50, 0.0, True),  # it grew: the link took half of what was produced
        (0.1, 100, 0.2, True),  # the window or the credit made the stream wait
        (0.1, 100, 0.0, False),  # none of that: time in sendmsg alone is not the link
    ],
)
def test_held_back_by_the_link_is_read_from_the_queue_not_from_sendmsg_time(
    fill: float, drained: int, waited: float, held: bool
) -> None:
    sample = Sample(0, 0.5, 200, 100, 0.1, 0.4, drained, wait_seconds=waited, queue_fill=fill)
    assert held_back(sample) is held


def test_a_link_measured_once_is_remembered_so_raw_is_not_retried_again_and_again() -> None:
    """2 Gbit/s-like: level 1 is CPU-bound just above what the link takes raw.

    The model cannot know the link before it holds the stream back: one trial of raw,
    undone; then the measured link rate is remembered and raw is not tried again for
    LINK_MEMORY_S (without the memory, it would be retried after every bar).
    """
    policy = LevelPolicy()
    table = {RAW: (1.0, 2000.0), 1: (2.0, 300.0), 3: (2.15, 150.0), 6: (2.25, 70.0)}
    moves = simulate(policy, link_mb=239, table=table, seconds=LINK_MEMORY_S)
    assert [level for _, level in moves] == [RAW, 1]
    assert policy.level == 1
