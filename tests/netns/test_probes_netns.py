"""The metrics port under attack (issue 22): probes, the scrape and the operator's pull
keep being answered during a sustained flood of half-open requests, and `/readyz` and
`/healthz` keep answering at the pids limit.  Real workers in network namespaces."""

from __future__ import annotations

import secrets
import time
import urllib.request
from pathlib import Path

import pytest

from netns.test_data_plane_security import PORT, adversary, outcome, pids_limit
from netns.w5t_bed import Bed, Namespace, WorkerProcess, start_worker, stop_all, wait_for
from w5xde.worker.local import issue_identities

METRICS = 9191

__all__ = ["pids_limit"]  # the fixture, shared with the data-plane tests


@pytest.fixture
def identities(tmp_path: Path) -> dict[str, dict[str, str]]:
    return issue_identities(["sec-0", "sec-1"], tmp_path)


def pair(
    bed: Bed, identities: dict[str, dict[str, str]], key: str
) -> tuple[WorkerProcess, WorkerProcess]:
    first, second, _ = bed.namespaces
    peers = [f"{first.address}:{PORT}", f"{second.address}:{PORT}"]

    def start(index: int, namespace: Namespace) -> WorkerProcess:
        return start_worker(
            namespace, name=f"sec-{index}", peers=peers, key=key,
            extra={
                "tls": identities[f"sec-{index}"],
                "metricsPort": METRICS,
                "reporting": {"intervalSeconds": 1},
            },
        )  # fmt: skip

    return start(0, first), start(1, second)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_probes_scrapes_and_pulls_are_answered_during_a_sustained_metrics_port_flood(
    bed: Bed, running: list[WorkerProcess], identities: dict[str, dict[str, str]]
) -> None:
    first, second, attacker_ns = bed.namespaces
    key = secrets.token_hex(32)
    peer, target = pair(bed, identities, key)
    running.extend([peer, target])
    base = f"http://{second.address}:{METRICS}"
    wait_for(lambda: ready(base + "/readyz"), timeout=20, what="the target to be ready")
    # 240 half-open requests, each reopened as soon as the worker closes it.
    flood = adversary(attacker_ns, "httpflood", f"{second.address}:{METRICS}", 240, 20)
    time.sleep(2.0)  # the flood is on
    # The kubelet's probes (1 s timeout, as the chart's), the scrape and the operator's
    # signed pull, from another address, all during the flood.
    probes = {
        path: adversary(first, "probe", base + path, 0.25, 15, 1.0)
        for path in ("/readyz", "/healthz")
    }
    scrape = adversary(first, "probe", base + "/metrics", 1.0, 15, 2.0)
    pull = adversary(first, "probe", base + "/report", 1.0, 15, 2.0, key)
    results = {path: outcome(process) for path, process in probes.items()}
    scraped, pulled = outcome(scrape), outcome(pull)
    flooded = outcome(flood)
    print(
        f"httpflood {flooded['opened']} connections, {flooded['perSecond']}/s; "
        + "; ".join(f"{p} {r['answered']}/{r['tried']}" for p, r in results.items())
        + f"; /metrics {scraped['answered']}/{scraped['tried']}"
        + f"; signed /report {pulled['answered']}/{pulled['tried']}"
    )
    assert flooded["opened"] >= 1000, "the flood was not sustained"
    for path, result in results.items():
        assert result["answered"] >= 0.9 * result["tried"], (path, result)
    assert scraped["answered"] >= 0.9 * scraped["tried"], scraped
    assert pulled["answered"] >= 0.9 * pulled["tried"], pulled
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        exported = response.read().decode()
    assert 'w5xde_metrics_refused_connections_total{reason="over the per-source cap"}' in exported
    finals = stop_all([peer, target])
    assert all(final["report"]["lostBatches"] == 0 for final in finals)
    assert "Traceback" not in "".join(target.stderr)


def test_readyz_and_healthz_answer_at_the_pids_limit(
    bed: Bed,
    running: list[WorkerProcess],
    identities: dict[str, dict[str, str]],
    pids_limit: Path,
) -> None:
    first, second, attacker_ns = bed.namespaces
    key = secrets.token_hex(32)
    peer, target = pair(bed, identities, key)
    running.extend([peer, target])
    base = f"http://{second.address}:{METRICS}"
    wait_for(lambda: ready(base + "/readyz"), timeout=20, what="the target to be ready")
    (pids_limit / "cgroup.procs").write_text(str(target.process.pid))
    tasks = int((pids_limit / "pids.current").read_text())
    (pids_limit / "pids.max").write_text(str(tasks))  # not one thread more
    flood = adversary(attacker_ns, "httpflood", f"{second.address}:{METRICS}", 100, 12)
    probes = {
        path: adversary(first, "probe", base + path, 0.25, 10, 1.0)
        for path in ("/readyz", "/healthz", "/metrics")
    }
    results = {path: outcome(process) for path, process in probes.items()}
    outcome(flood)
    print(
        "; ".join(f"{p} {r['answered']}/{r['tried']} at the pids limit" for p, r in results.items())
    )
    for path, result in results.items():
        assert result["answered"] >= 0.9 * result["tried"], (path, result)
    assert int((pids_limit / "pids.current").read_text()) <= tasks
    assert target.process.poll() is None
    stop_all([peer, target])
