"""Fair admission of pending handshakes, and the per-identity and total caps (no timing)."""

from __future__ import annotations

from w5xde.worker.admission import (
    KNOWN_RESERVE,
    MAX_PENDING,
    PENDING_PER_SOURCE,
    RUNNING_PER_SOURCE,
    SOURCE_CAP,
    TOTAL_CAP,
    Admission,
    KnownPeers,
    Pending,
    SenderPolicy,
    Stage,
    source_of,
)
from w5xde.worker.config import WorkerConfig


def entry(source: str, *, known: bool = False) -> Pending:
    return Pending(source, known, 0.0, 5.0, object())


def test_a_flood_from_one_source_evicts_itself_not_the_others() -> None:
    admission = Admission()
    peer = entry("10.0.0.2", known=True)
    stranger = entry("10.0.0.3")
    assert admission.admit(peer) == []
    assert admission.admit(stranger) == []
    flood = [entry("10.0.0.66") for _ in range(10 * MAX_PENDING)]
    evicted: list[tuple[Pending, str]] = []
    for one in flood:
        evicted += admission.admit(one)
    assert all(victim.source == "10.0.0.66" for victim, _ in evicted)
    assert {cap for _, cap in evicted} == {SOURCE_CAP}
    # The newest of the flood stay (the oldest went first), and so do the others.
    left = [e for e in flood if all(e is not victim for victim, _ in evicted)]
    assert left == flood[-PENDING_PER_SOURCE:]
    assert len(admission) == PENDING_PER_SOURCE + 2


def test_many_unknown_sources_leave_the_reserve_to_known_peers() -> None:
    admission = Admission()
    for n in range(4 * MAX_PENDING):
        admission.admit(entry(f"10.1.{n // 200}.{n % 200}"))
    assert len(admission) == MAX_PENDING - KNOWN_RESERVE
    known = [entry(f"10.0.0.{n}", known=True) for n in range(KNOWN_RESERVE)]
    for one in known:
        assert admission.admit(one) == [], "a known peer found no room"
    # Over the total, a known newcomer evicts the most represented unknown source.
    late = entry("10.0.0.200", known=True)
    evicted = admission.admit(late)
    assert [(victim.known, cap) for victim, cap in evicted] == [(False, TOTAL_CAP)]


def test_threads_take_known_peers_first_and_the_reserved_one_only_them() -> None:
    admission = Admission()
    flood = [entry("10.0.0.66") for _ in range(8)]
    for one in flood:
        admission.admit(one)
        admission.ready(one)
    assert admission.take(reserved=True, timeout=0) is None
    peer = entry("10.0.0.2", known=True)
    admission.admit(peer)
    admission.ready(peer)
    assert admission.take(reserved=True, timeout=0) is peer


def test_threads_go_round_the_sources_and_one_runs_at_most_its_share() -> None:
    admission = Admission()
    flood = [entry("10.0.0.66") for _ in range(8)]
    other = entry("10.0.0.67")
    for one in [*flood, other]:
        admission.admit(one)
        admission.ready(one)
    taken = [admission.take(reserved=False, timeout=0) for _ in range(4)]
    # The source with fewer handshakes running goes first, then the oldest.
    assert taken[:2] == [flood[0], other]
    assert taken[2] is flood[1]
    # The flood's source is at its share (RUNNING_PER_SOURCE): nothing more to take.
    assert RUNNING_PER_SOURCE == 2
    assert taken[3] is None
    assert flood[0].stage is Stage.RUNNING
    admission.done(flood[0])
    assert admission.take(reserved=False, timeout=0) is flood[2]


def test_silent_entries_expire_but_running_ones_are_the_threads_to_end() -> None:
    admission = Admission()
    silent, running = entry("10.0.0.5"), entry("10.0.0.6")
    admission.admit(silent)
    admission.admit(running)
    admission.ready(running)
    assert admission.take(reserved=False, timeout=0) is running
    assert admission.expired(4.9) == []
    assert admission.expired(5.0) == [silent]


def test_known_peers_from_addresses_and_proofs() -> None:
    known = KnownPeers()
    known.configure(["10.0.0.2", "::ffff:10.0.0.3", "name-that-is-not-looked-up"])
    assert "10.0.0.2" in known
    assert "10.0.0.3" in known
    assert "10.0.0.4" not in known
    known.prove(source_of(("10.0.0.4", 5555)))
    assert "10.0.0.4" in known


def config(topology: str, workers: int, streams: int = 1, name: str = "w-0") -> WorkerConfig:
    return WorkerConfig(
        name=name,
        cluster_id="c",
        peer_pattern="w-{index}.svc:7070",
        workers=workers,
        workload={"topology": topology, "streamsPerPeer": streams},
    )


def test_stream_indices_follow_streams_per_peer_and_the_topology() -> None:
    ring = SenderPolicy(config("ring", 4, streams=2), 4)
    assert ring.multiplicity("w-3") == 1  # w-3 -> w-0 in the ring
    assert ring.multiplicity("w-1") == 0
    assert ring.streams_allowed("w-3") == 2
    # One this worker does not expect (a scale-up not heard of yet) gets one peer's worth.
    assert ring.streams_allowed("w-9") == 2
    assert ring.streams_allowed("member-x") == 2


def test_the_total_cap_follows_the_in_degree() -> None:
    assert SenderPolicy(config("ring", 4), 4).max_connections() == 2 * 1 + 8
    assert SenderPolicy(config("all-to-all", 10, 2), 10).max_connections() == 2 * 9 * 2 + 8
    mesh = SenderPolicy(config("mesh", 100), 100)
    assert mesh.max_connections() == 2 * 8 + 8
    grows = SenderPolicy(config("all-to-all", 2), 2)
    grows.resize(20)
    assert grows.max_connections() == 2 * 19 + 8


def test_the_hosts_that_stream_here_are_the_known_ones() -> None:
    assert SenderPolicy(config("ring", 4), 4).expected_hosts() == ["w-3.svc"]
    assert len(SenderPolicy(config("all-to-all", 5), 5).expected_hosts()) == 4
