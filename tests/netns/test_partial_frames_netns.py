"""Partial frames bounded in time and in total memory (issue 22), with real workers,
real TLS and a real cluster member's certificate in network namespaces."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from netns.test_data_plane_security import CLUSTER, PORT, adversary, outcome
from netns.w5t_bed import Bed, WorkerProcess, start_worker, stop_all, wait_for
from w5xde.worker.local import issue_identities
from w5xde.worker.protocol import HEADER_BYTES
from w5xde.worker.receiver import PARTIAL_BUDGET_FLOOR, partial_deadline_seconds


@pytest.fixture
def identities(tmp_path: Path) -> dict[str, dict[str, str]]:
    return issue_identities(["sec-0", "sec-1", "member-9"], tmp_path)


def pair(
    bed: Bed, identities: dict[str, dict[str, str]], key: str, batch: int
) -> list[WorkerProcess]:
    first, second, _ = bed.namespaces
    peers = [f"{first.address}:{PORT}", f"{second.address}:{PORT}"]
    return [
        start_worker(
            namespace,
            name=f"sec-{index}",
            peers=peers,
            key=key,
            extra={
                "tls": identities[f"sec-{index}"],
                # Four streams per peer: a member not in the topology may open four.
                "workload": {
                    "batchBytes": batch,
                    "rateLimitBytesPerSecond": 8 << 20,
                    "streamsPerPeer": 4,
                },
            },
        )
        for index, namespace in enumerate((first, second))
    ]


def member_args(identities: dict[str, dict[str, str]], key: str) -> list[str]:
    member = identities["member-9"]
    files = [member["certificateFile"], member["keyFile"], member["caFile"]]
    return [*files, "member-9", CLUSTER, key]


def test_a_trickled_partial_frame_is_cut_by_its_deadline(
    bed: Bed, running: list[WorkerProcess], identities: dict[str, dict[str, str]]
) -> None:
    """A byte every 2 s keeps the silence timer (10 s) from ever firing; the frame's
    deadline, from its size and the floor rate, cuts it anyway."""
    _, _, attacker_ns = bed.namespaces
    key = secrets.token_hex(32)
    batch = 256 * 1024
    workers = pair(bed, identities, key, batch)
    running.extend(workers)
    target = workers[1]
    wait_for(lambda: target.report().get("batches", 0) > 20, what="the pair to stream")
    target_address = f"{bed.namespaces[1].address}:{PORT}"
    trickled = outcome(
        adversary(
            attacker_ns,
            "partial",
            target_address,
            4,
            30,
            *member_args(identities, key),
            batch,
            batch // 2,
            2.0,
        ),
        timeout=60,
    )
    deadline = partial_deadline_seconds(HEADER_BYTES + batch)
    print(f"trickled partial frames cut after {trickled['closed']} s (deadline {deadline:.1f} s)")
    assert trickled["opened"] == 4
    closed = trickled["closed"]
    assert None not in closed, "a trickled partial frame was never cut"
    assert all(deadline - 1.0 <= seconds <= deadline + 2.5 for seconds in closed), closed
    wait_for(lambda: target.report().get("protocolErrors", 0) >= 4, timeout=5, what="4 cuts")
    assert target.report()["rssBytes"] < 120 * 1024 * 1024
    finals = stop_all(workers)
    assert all(final["report"]["lostBatches"] == 0 for final in finals)
    assert all(final["report"]["corruptBatches"] == 0 for final in finals)


def test_partial_frames_share_one_memory_budget(
    bed: Bed, running: list[WorkerProcess], identities: dict[str, dict[str, str]]
) -> None:
    """A member holds four nearly complete 16 MiB frames, over the budget the streams
    share (64 MiB here): its connections are cut at once, not at their deadline, and
    the peer's stream goes on."""
    _, _, attacker_ns = bed.namespaces
    key = secrets.token_hex(32)
    batch = 16 << 20
    workers = pair(bed, identities, key, batch)
    running.extend(workers)
    target = workers[1]
    wait_for(lambda: target.report().get("batches", 0) > 5, timeout=30, what="the pair to stream")
    baseline = max(target.report()["rssBytes"] for _ in range(3) if time.sleep(0.3) is None)
    target_address = f"{bed.namespaces[1].address}:{PORT}"
    held = outcome(
        adversary(
            attacker_ns,
            "partial",
            target_address,
            4,
            20,
            *member_args(identities, key),
            batch,
            batch - 1024,
        ),
        timeout=90,
    )
    print(f"partial frames over the budget ({PARTIAL_BUDGET_FLOOR >> 20} MiB) cut: {held}")
    assert held["opened"] == 4
    closed = held["closed"]
    # At least one is cut at once (the budget), long before its deadline (~266 s).
    assert any(seconds is not None and seconds < 5.0 for seconds in closed), closed
    before = target.report().get("batches", 0)
    wait_for(
        lambda: target.report().get("batches", 0) > before + 3,
        timeout=20,
        what="the peer's stream to go on",
    )
    grown = target.report()["rssBytes"] - baseline
    print(f"RSS {baseline >> 20} MiB before, grown by {grown >> 20} MiB")
    # What the attack added is bounded by the budget (and a frame being copied).
    assert grown < PARTIAL_BUDGET_FLOOR + batch + 16 * 1024 * 1024
    finals = stop_all(workers)
    assert all(final["report"]["lostBatches"] == 0 for final in finals)
    assert "Traceback" not in "".join(target.stderr)
