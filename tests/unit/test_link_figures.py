"""The fold of per-link figures: rows, the shared-node flag, notable links, the bound."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from w5xde.api.v1alpha1 import (
    MAX_NOTABLE_LINKS,
    CompressionClusterSpec,
    CompressionClusterStatus,
    RunSummary,
    Topology,
)
from w5xde.contract.link_figures import link_rows, links_status
from w5xde.contract.report import LinkReport, PeerLoss, WorkerReport
from w5xde.operator.ledger import Ledger
from w5xde.operator.observation import Fetched, Observation, PodState, StatefulSetState
from w5xde.operator.status_folding import fold_status
from w5xde.worker.topology import cycle_order, targets

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _link(peer: str, raw: float, rtt_p99: float = 0.002, samples: int = 10) -> LinkReport:
    return LinkReport(
        peer=peer,
        streams=1,
        streams_connected=1,
        raw_bytes_per_second=raw,
        wire_bytes_per_second=raw / 2,
        batches_per_second=raw / 65536,
        rtt_p50_seconds=rtt_p99 / 2,
        rtt_p99_seconds=rtt_p99,
        rtt_samples=samples,
    )


def test_rows_join_losses_from_the_receiver_and_flag_shared_nodes() -> None:
    reports = [
        WorkerReport(name="c-0", node="stale-node", links=[_link("c-1", 9e6), _link("c-2", 8e6)]),
        WorkerReport(name="c-1", node="n1", links=[_link("c-0", 7e6)]),
        WorkerReport(name="c-2", node="n2", lost_from=[PeerLoss(peer="c-0", lost_batches=3)]),
    ]
    # The operator's pods index wins over a report's own node name.
    rows = link_rows(reports, {"c-0": "n1", "c-1": "n1", "c-2": "n2"})
    assert [(row.sender, row.receiver) for row in rows] == [
        ("c-0", "c-1"),
        ("c-0", "c-2"),
        ("c-1", "c-0"),
    ]
    shared = {(row.sender, row.receiver): row.shared_node for row in rows}
    assert shared == {("c-0", "c-1"): True, ("c-0", "c-2"): False, ("c-1", "c-0"): True}
    assert [row.lost_batches for row in rows] == [0, 3, 0]
    # Without a node for one end, a link is never claimed to share one.
    assert not any(row.shared_node for row in link_rows(reports[1:2]))


def test_notable_links_lossy_then_slowest_then_highest_rtt_then_shared() -> None:
    reports = [
        WorkerReport(
            name=f"w-{index}",
            node=f"n{index % 2}",
            links=[_link(f"w-{(index + 1) % 20}", 1e6 * (index + 1), rtt_p99=0.001 * (20 - index))],
        )
        for index in range(20)
    ]
    reports[5] = reports[5].model_copy(update={"lost_from": [PeerLoss(peer="w-4", lost_batches=1)]})
    status = links_status(link_rows(reports))
    reasons = [(item.sender, item.reason.value) for item in status.notable]
    assert reasons[0] == ("w-4", "Lossy")
    assert reasons[1:4] == [("w-0", "Slowest"), ("w-1", "Slowest"), ("w-2", "Slowest")]
    # The highest RTT is w-0's, already listed as slowest: each link once.
    assert reasons[4:7] == [("w-3", "HighestRtt"), ("w-5", "HighestRtt"), ("w-6", "HighestRtt")]
    # Consecutive workers alternate nodes: no link shares one.
    assert status.sharing_node == 0
    assert len(status.notable) == 7
    assert status.links == 20
    assert status.spread.min_bytes_per_second == 1e6
    assert status.rtt_p99.max_seconds == 0.020


def test_a_thousand_workers_of_mesh_degree_eight_keep_the_status_bounded() -> None:
    workers, degree, nodes = 1000, 8, 50
    names = [f"big-{index}" for index in range(workers)]
    node_of = {name: f"node-{index % nodes}" for index, name in enumerate(names)}
    # The mesh's links (`topology.targets`), from each cycle's order at once.
    mesh: list[list[int]] = [[] for _ in range(workers)]
    for cycle in range(degree):
        order = cycle_order(cycle, workers)
        for position, index in enumerate(order):
            mesh[index].append(order[(position + 1) % workers])
    assert mesh[7] == targets(Topology.MESH, 7, workers, degree)
    fetched = []
    for index, name in enumerate(names):
        peers = mesh[index]
        links = [_link(names[peer], 1e6 + index, rtt_p99=0.001 + peer / 1e6) for peer in peers]
        report = WorkerReport(
            name=name, node=node_of[name], incarnation="i", generated_at=NOW.timestamp() - 1,
            throughput_bytes_per_second=1e6, links=links,
        )  # fmt: skip
        fetched.append(Fetched(name, report=report))
    pods = tuple(PodState(name, True, ip="10.0.0.1", node=node_of[name]) for name in names)
    observation = Observation(
        now=NOW, generation=1, applied_generation=1,
        statefulset=StatefulSetState(workers, workers, workers, "r", "r", up_to_date=True),
        pods=pods, fetched=tuple(fetched),
    )  # fmt: skip
    spec = CompressionClusterSpec.model_validate({"workers": workers, "workload": {
        "topology": "mesh", "meshDegree": degree}})  # fmt: skip
    heard = {name: NOW.timestamp() for name in names}
    fold = fold_status(spec, CompressionClusterStatus(), observation, Ledger(), heard)

    links = fold.patch["links"]
    expected_shared = sum(
        1 for index in range(workers) for peer in mesh[index] if index % nodes == peer % nodes
    )
    assert links["links"] == workers * degree
    assert links["sharingNode"] == expected_shared > 0
    assert len(links["notable"]) == MAX_NOTABLE_LINKS
    assert fold.patch["run"]["links"] == workers * degree
    assert fold.patch["run"]["linksSharingNode"] == expected_shared
    # The links part is a few KB whatever the link count.
    links_bytes = len(json.dumps(links))
    assert links_bytes <= 6 * 1024, links_bytes
    # The whole status with ten kept runs stays inside DESIGN.md's 64 KiB.
    status = CompressionClusterStatus.model_validate(fold.patch)
    run = RunSummary.model_validate(
        {"id": "run-1", "outcome": "SpecChanged", "links": 8000, "linksSharingNode": 160}
    )
    status = status.model_copy(
        update={"runs": [run.model_copy(update={"id": f"run-{i}"}) for i in range(10)]}
    )
    size = len(json.dumps(status.model_dump(mode="json", by_alias=True)))
    assert size <= 65536, size
