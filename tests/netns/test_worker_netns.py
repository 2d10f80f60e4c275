"""Workers in separate network namespaces: ring, sysctls, restarts, loss, wrong key."""

from __future__ import annotations

import secrets
import shutil

import pytest

from netns.w5t_bed import (
    Bed,
    Namespace,
    WorkerProcess,
    start_worker,
    stop_all,
    wait_for,
)

PORT = 7070


def peers_of(namespaces: list[Namespace]) -> list[str]:
    return [f"{namespace.address}:{PORT}" for namespace in namespaces]


def test_three_workers_in_three_namespaces_stream_in_a_ring(
    bed: Bed, running: list[WorkerProcess]
) -> None:
    key = secrets.token_hex(32)
    peers = peers_of(bed.namespaces)
    for index, namespace in enumerate(bed.namespaces):
        running.append(start_worker(namespace, name=f"ring-{index}", peers=peers, key=key))
    wait_for(
        lambda: all(worker.report().get("batches", 0) > 200 for worker in running),
        what="every worker to receive batches",
    )
    finals = stop_all(running)
    for final in finals:
        report = final["report"]
        assert report["lostBatches"] == 0
        assert report["corruptBatches"] == 0
        assert 1.5 < report["rawBytes"] / report["wireBytes"] < 3.0
    # In a ring each worker receives from exactly its predecessor: what it acknowledged
    # as a sender is what its successor verified.
    for index, final in enumerate(finals):
        successor = finals[(index + 1) % len(finals)]
        assert final["extras"]["sentBatches"] == successor["report"]["batches"]
        assert final["extras"]["unackedBatches"] == 0


def test_namespaced_sysctls_are_what_the_worker_sees(
    bed: Bed, running: list[WorkerProcess]
) -> None:
    key = secrets.token_hex(32)
    first, second = bed.namespaces[:2]
    defaults = {first.name: 87380, second.name: 262144}
    for namespace in (first, second):
        value = defaults[namespace.name]
        namespace.exec("sysctl", "-qw", f"net.ipv4.tcp_wmem=4096 {value} 4194304")
        namespace.exec("sysctl", "-qw", f"net.ipv4.tcp_rmem=4096 {value} 6291456")
    peers = peers_of([first, second])
    # socketBufferBytes 0 leaves autotuning on: the buffers start at tcp_[rw]mem's default.
    extra = {"network": {"port": PORT, "socketBufferBytes": 0}}
    for index, namespace in enumerate((first, second)):
        running.append(
            start_worker(namespace, name=f"sys-{index}", peers=peers, key=key, extra=extra)
        )
    wait_for(lambda: all(w.report().get("peersConnected") == 1 for w in running), what="connect")
    for worker, namespace in zip(running, (first, second), strict=True):
        buffers = worker.report()["socketBuffer"]
        assert buffers["requested"] == 0
        assert buffers["effectiveSend"] == defaults[namespace.name]
        assert buffers["effectiveReceive"] == defaults[namespace.name]
    stop_all(running)


def test_a_receiver_killed_mid_stream_gets_the_window_replayed_and_loses_nothing(
    bed: Bed, running: list[WorkerProcess]
) -> None:
    key = secrets.token_hex(32)
    first, second = bed.namespaces[:2]
    peers = peers_of([first, second])
    sender = start_worker(first, name="kill-0", peers=peers, key=key)
    receiver = start_worker(second, name="kill-1", peers=peers, key=key)
    running.extend([sender, receiver])
    wait_for(lambda: receiver.report().get("batches", 0) > 300, what="streaming")
    receiver.kill()
    # The sender's window now holds what the dead receiver never acknowledged.
    restarted = start_worker(second, name="kill-1", peers=peers, key=key)
    running.append(restarted)
    wait_for(lambda: restarted.report().get("batches", 0) > 300, what="the replay")
    sender_final, restarted_final = stop_all([sender, restarted])
    assert sender_final["report"]["resentBatches"] > 0
    assert restarted_final["report"]["lostBatches"] == 0
    assert sender_final["report"]["lostBatches"] == 0
    assert restarted_final["report"]["corruptBatches"] == 0
    # Everything the sender produced since the restart was verified by the new receiver:
    # the sender's window is empty at the end.
    assert sender_final["extras"]["unackedBatches"] == 0


def test_a_broken_connection_is_replayed_and_the_receiver_drops_duplicates(
    bed: Bed, running: list[WorkerProcess]
) -> None:
    key = secrets.token_hex(32)
    first, second = bed.namespaces[:2]
    peers = peers_of([first, second])
    sender = start_worker(first, name="cut-0", peers=peers, key=key)
    receiver = start_worker(second, name="cut-1", peers=peers, key=key)
    running.extend([sender, receiver])
    wait_for(lambda: receiver.report().get("batches", 0) > 300, what="streaming")
    # Destroy the sender's socket under it (the receiver keeps its delivery state), until
    # a cut lands while verified batches are still unacknowledged.
    for _ in range(10):
        resent = sender.report().get("resentBatches", 0)
        first.exec("ss", "-K", "dst", second.address, "dport", "=", str(PORT))
        wait_for(
            lambda before=resent: sender.report().get("resentBatches", 0) > before,
            what="a replay",
        )
        if receiver.extras().get("duplicateBatches", 0) > 0:
            break
    sender_final, receiver_final = stop_all([sender, receiver])
    assert receiver_final["extras"]["duplicateBatches"] > 0
    assert receiver_final["report"]["lostBatches"] == 0
    # Exactly once across the cuts: the receiver counted each batch the sender got an
    # acknowledgement for once, however many times it was sent.
    assert sender_final["extras"]["sentBatches"] == receiver_final["report"]["batches"]
    assert sender_final["extras"]["unackedBatches"] == 0


def _impair(namespace: Namespace, *, loss_percent: int, delay_ms: int) -> str:
    """Apply loss (and delay where the kernel has sch_netem); returns what was applied."""
    netem = namespace.exec(
        "tc",
        "qdisc",
        "add",
        "dev",
        "eth0",
        "root",
        "netem",
        "delay",
        f"{delay_ms}ms",
        "loss",
        f"{loss_percent}%",
        check=False,
    )
    if netem.returncode == 0:
        return "netem"
    if delay_ms:
        # The one skip tests/allowed_skips.txt allows: a kernel built without it.
        pytest.skip(f"no sch_netem on this kernel ({delay_ms} ms delay): {netem.stderr.strip()}")
    if shutil.which("nft") is None:
        pytest.fail("neither sch_netem nor nft for packet loss: run `make worker-tools`")
    namespace.exec("nft", "add", "table", "inet", "w5t")
    namespace.exec(
        "nft",
        "add",
        "chain",
        "inet",
        "w5t",
        "out",
        "{ type filter hook output priority 0 ; policy accept ; }",
    )
    namespace.exec(
        "nft",
        "add",
        "rule",
        "inet",
        "w5t",
        "out",
        "oifname",
        "eth0",
        "numgen",
        "random",
        "mod",
        "100",
        "<",
        str(loss_percent),
        "drop",
    )
    # The output hook sees packets before segmentation: 2 % of (possibly GSO) packets.
    return "nft"


def _retransmitted_segments(namespace: Namespace) -> int:
    lines = [
        line.split()
        for line in namespace.exec("cat", "/proc/net/snmp").stdout.splitlines()
        if line.startswith("Tcp:")
    ]
    names, values = lines[0], lines[1]
    return int(values[names.index("RetransSegs")])


def _clear_impairment(namespace: Namespace) -> None:
    namespace.exec("tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    namespace.exec("nft", "delete", "table", "inet", "w5t", check=False)


@pytest.mark.parametrize(
    ("loss", "delay", "batches"),
    # A 10 ms round trip with 2 % loss carries ~1 MB/s per connection: fewer batches there.
    [(2, 5, 400), (2, 0, 2000)],
    ids=["netem-2pct-5ms", "loss-2pct"],
)
def test_lossy_delayed_links_still_deliver_everything(
    bed: Bed, running: list[WorkerProcess], loss: int, delay: int, batches: int
) -> None:
    key = secrets.token_hex(32)
    first, second = bed.namespaces[:2]
    try:
        for namespace in (first, second):
            _impair(namespace, loss_percent=loss, delay_ms=delay)
        before = [_retransmitted_segments(namespace) for namespace in (first, second)]
        peers = peers_of([first, second])
        for index, namespace in enumerate((first, second)):
            running.append(start_worker(namespace, name=f"loss-{index}", peers=peers, key=key))
        # Enough traffic that the data direction has certainly lost segments (2 % of the
        # GSO packets of a few MB can be none; pure ACKs lost are never retransmitted).
        wait_for(
            lambda: (
                all(w.report().get("batches", 0) > batches for w in running)
                and all(
                    _retransmitted_segments(namespace) - already >= 20
                    for namespace, already in zip((first, second), before, strict=True)
                )
            ),
            timeout=90,
            what="data through the lossy link, with retransmissions",
        )
        finals = stop_all(running)
        # The loss was real: TCP had to retransmit inside the namespaces.
        retransmitted = [_retransmitted_segments(namespace) for namespace in (first, second)]
        assert sum(retransmitted) > 0
        # ... and each sender's link says so, from its sockets' own TCP_INFO: never more
        # than its whole namespace retransmitted (the ACK direction counts there too).
        for index, final in enumerate(finals):
            (link,) = final["report"]["links"]
            assert 0 <= link["tcpRetransmittedSegments"] <= retransmitted[index], link
        assert sum(f["report"]["links"][0]["tcpRetransmittedSegments"] for f in finals) > 0
    finally:
        for namespace in (first, second):
            _clear_impairment(namespace)
    for index, final in enumerate(finals):
        other = finals[1 - index]
        assert final["report"]["lostBatches"] == 0
        assert final["report"]["corruptBatches"] == 0
        assert final["extras"]["unackedBatches"] == 0
        assert final["extras"]["sentBatches"] == other["report"]["batches"]


def test_a_peer_with_the_wrong_key_delivers_nothing(bed: Bed, running: list[WorkerProcess]) -> None:
    first, second = bed.namespaces[:2]
    peers = peers_of([first, second])
    honest = start_worker(first, name="key-0", peers=peers, key=secrets.token_hex(32))
    intruder = start_worker(second, name="key-1", peers=peers, key=secrets.token_hex(32))
    running.extend([honest, intruder])
    # Several refusals on each side: the senders kept retrying, and every try was refused.
    wait_for(
        lambda: (
            honest.extras().get("refusedConnections", 0) >= 3
            and intruder.extras().get("refusedConnections", 0) >= 3
        ),
        timeout=30,
        what="three handshakes refused on each side",
    )
    for worker, final in zip((honest, intruder), stop_all([honest, intruder]), strict=True):
        assert final["report"]["batches"] == 0
        assert final["report"]["rawBytes"] == 0
        assert final["report"]["peersConnected"] == 0
        assert final["extras"]["refusedConnections"] >= 3
        assert final["extras"]["sentBatches"] == 0
        # Refused for the key, by the proof, and said so in the log (logMode normal).
        assert "does not hold the cluster key" in "".join(worker.stderr), worker.stderr[-5:]
