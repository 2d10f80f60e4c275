"""`make mutation`'s list of targets and its report: killed / total per target, survivors.

The targets are mutmut mutant-name globs (module, then `x_function` or
`xǁClassǁmethod`).  `python tests/mutation/report.py --patterns` prints them for
`mutmut run`; without arguments it reads `mutmut results --all true` and prints the
table and every mutant that survived (see `mutmut show NAME` for its diff).
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from collections import Counter
from pathlib import Path

SENDER = "w5xde.worker.sender.xǁOutgoingStreamǁ"
RECEIVER = "w5xde.worker.receiver."

#: What `make mutation` mutates, by the part of the contract each target stands for.
TARGETS: dict[str, list[str]] = {
    "worker/protocol.py (wire format)": ["w5xde.worker.protocol.*"],
    "worker/codec.py": ["w5xde.worker.codec.*"],
    "worker/pacing.py (the sender's rate limiter)": ["w5xde.worker.pacing.*"],
    "worker/sender.py (the replay window)": [
        f"{SENDER}_produce__mutmut_*",
        f"{SENDER}_acknowledge__mutmut_*",
        f"{SENDER}_read_acks__mutmut_*",
        f"{SENDER}take_unacked__mutmut_*",
        "w5xde.worker.sender.x__drop_sent__mutmut_*",
    ],
    "worker/receiver.py (sequence checks)": [
        f"{RECEIVER}xǁIncomingConnectionǁ_receive__mutmut_*",
        f"{RECEIVER}xǁIncomingRegistryǁclaim__mutmut_*",
    ],
    "operator/status_folding.py (the fold)": ["w5xde.operator.status_folding.*"],
    "contract/figures.py (the fold's figures)": ["w5xde.contract.figures.*"],
    "contract/statistics.py (the fold's run statistics)": ["w5xde.contract.statistics.*"],
}

#: mutmut's words for an outcome; everything but "killed" and "timeout" is a survivor
#: ("no tests": no selected test even runs the mutated code).  A timeout counts as
#: killed (the mutant hung a test) but is shown apart.
KILLED = {"killed", "timeout"}


def patterns(only: list[str] | None = None) -> list[str]:
    return [
        pattern
        for target, globs in TARGETS.items()
        if not only or any(word in target for word in only)
        for pattern in globs
    ]


def results() -> dict[str, str]:
    mutmut = Path(sys.executable).with_name("mutmut")
    listing = subprocess.run(
        [str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    outcome: dict[str, str] = {}
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            outcome[name] = status
    return outcome


def report(outcome: dict[str, str]) -> int:
    rows = []
    survivors: list[tuple[str, str]] = []
    all_killed = all_total = 0
    for target, globs in TARGETS.items():
        names = [name for name in outcome if any(fnmatch.fnmatchcase(name, g) for g in globs)]
        checked = [name for name in names if outcome[name] != "not checked"]
        if not checked:
            rows.append((target, "-", "-", "-", "-", "not run"))
            continue
        counts = Counter(outcome[name] for name in checked)
        killed = sum(counts[status] for status in KILLED)
        all_killed += killed
        all_total += len(checked)
        rows.append(
            (
                target,
                f"{killed}/{len(checked)}",
                str(counts["timeout"]),
                str(counts["survived"]),
                str(counts["no tests"]),
                f"{100 * killed / len(checked):.1f} %",
            )
        )
        survivors += [(name, outcome[name]) for name in checked if outcome[name] not in KILLED]
    header = ("target", "killed", "timeout", "survived", "no tests", "rate")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    if all_total:
        print(f"all: {all_killed}/{all_total} killed, {100 * all_killed / all_total:.1f} %")
    print(f"\n{len(survivors)} surviving mutants (mutmut show NAME for the diff):")
    for name, status in sorted(survivors):
        print(f"  {name}: {status}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--patterns"]:
        print("\n".join(patterns(sys.argv[2:])))
    else:
        sys.exit(report(results()))
