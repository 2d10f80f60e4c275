"""`w5xde local` with real worker processes: every link timed, link bytes add up."""

from __future__ import annotations

import json
import math
import subprocess
import sys

W5XDE = [sys.executable, "-m", "w5xde"]


def _local(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*W5XDE, "local", "--workers", "3", "--duration", "3", "--topology", "all-to-all",
         "--batch-bytes", "16384", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_local_reports_every_link_with_a_round_trip_and_bytes_that_add_up() -> None:
    result = _local("--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    links = data["links"]
    pairs = {(link["sender"], link["receiver"]) for link in links}
    names = {f"local-{index}" for index in range(3)}
    assert pairs == {(a, b) for a in names for b in names if a != b}
    for link in links:
        assert 0 < link["rttP50Seconds"] <= link["rttP99Seconds"] < 5.0, link
        assert math.isfinite(link["rttP99Seconds"])
        assert link["rawBytesPerSecond"] > 0
        assert link["lostBatches"] == 0
        # Every local worker runs on this machine.
        assert link["sharedNode"] is True
        # The kernel's view of the sender's sockets while they were open.
        assert link["tcpSrttSeconds"] > 0
        assert link["tcpCwndBytes"] > 0
    # What the links delivered (acknowledged) is what the workers received and verified.
    delivered = sum(link["rawBytes"] for link in links)
    received = sum(node["rawBytes"] for node in data["workers"])
    # (All workers drain before they close: at most a few ACKs go unread.)
    assert 0 < delivered <= received <= delivered * 1.01


def test_local_table_prints_a_row_per_link() -> None:
    result = _local()
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "RTT p99 ms" in line)
    # (The expectations table follows the links table after a blank line.)
    rows = result.stdout.split(header)[1].strip().split("\n\n")[0].splitlines()
    assert len(rows) == 6
    for row in rows:
        cells = row.split()
        assert cells[0] != cells[1]
        assert float(cells[7]) > 0  # RTT p50 in ms
        assert cells[-1] == "yes"
