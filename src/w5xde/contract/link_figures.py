"""The one fold of the workers' per-link figures, for the operator, the plugin and
`w5xde local`.

Each worker reports its outgoing links (`WorkerReport.links`) and the senders it
found batches missing from (`WorkerReport.lostFrom`); a link sender -> receiver is the
sender's entry, with `lostBatches` from the receiver's report.  Whether both ends share
a node comes from a map of worker -> node (the operator's pods index; else each
report's own `node`).

Linear in the number of links (8,000 at 1,000 workers of mesh degree 8), with plain
dataclasses per row: only the few notable links become API objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from w5xde.api.v1alpha1 import (
    MAX_NOTABLE_LINKS,
    PROBLEM_LINK_STATES,
    LinksStatus,
    LinkState,
    NotableLink,
    NotableLinkReason,
    SecondsSpread,
)
from w5xde.contract.figures import percentile, spread_of
from w5xde.contract.report import WorkerReport

#: How many of the slowest, and of the highest-RTT, links `notable` names when room is left.
SLOWEST_LINKS_LISTED = 3
HIGHEST_RTT_LISTED = 3


@dataclass(frozen=True, slots=True)
class LinkRow:
    """One sender -> receiver link of the last reports."""

    sender: str
    receiver: str
    sender_node: str
    receiver_node: str
    shared_node: bool
    raw_bytes_per_second: float
    wire_bytes_per_second: float
    batches_per_second: float
    lost_batches: int
    resent_batches: int
    rtt_p50_seconds: float
    rtt_p99_seconds: float
    rtt_samples: int
    raw_bytes: int
    wire_bytes: int
    batches: int
    state: LinkState = LinkState.FLOWING
    state_seconds: float = 0.0
    state_message: str = ""
    tcp_retransmitted_segments: int = 0
    tcp_srtt_seconds: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.sender, self.receiver)


def link_rows(
    reports: Sequence[WorkerReport], nodes: Mapping[str, str] | None = None
) -> list[LinkRow]:
    """Every link of `reports`, sorted by (sender, receiver)."""
    node_of = {report.name: report.node for report in reports if report.node}
    if nodes:
        node_of.update({name: node for name, node in nodes.items() if node})
    lost: dict[tuple[str, str], int] = {}
    for report in reports:
        for loss in report.lost_from:
            lost[(loss.peer, report.name)] = loss.lost_batches
    rows: list[LinkRow] = []
    for report in reports:
        sender_node = node_of.get(report.name, "")
        for link in report.links:
            receiver_node = node_of.get(link.peer, "")
            rows.append(
                LinkRow(
                    sender=report.name,
                    receiver=link.peer,
                    sender_node=sender_node,
                    receiver_node=receiver_node,
                    shared_node=bool(sender_node) and sender_node == receiver_node,
                    raw_bytes_per_second=link.raw_bytes_per_second,
                    wire_bytes_per_second=link.wire_bytes_per_second,
                    batches_per_second=link.batches_per_second,
                    lost_batches=lost.get((report.name, link.peer), 0),
                    resent_batches=link.resent_batches,
                    rtt_p50_seconds=link.rtt_p50_seconds,
                    rtt_p99_seconds=link.rtt_p99_seconds,
                    rtt_samples=link.rtt_samples,
                    raw_bytes=link.raw_bytes,
                    wire_bytes=link.wire_bytes,
                    batches=link.batches,
                    state=link.state,
                    state_seconds=link.state_seconds,
                    state_message=link.state_message,
                    tcp_retransmitted_segments=link.tcp_retransmitted_segments,
                    tcp_srtt_seconds=link.tcp_srtt_seconds,
                )
            )
    rows.sort(key=lambda row: row.key)
    return rows


#: Links in a problem state come first in `notable`, worst state first.
_PROBLEMS = (
    (LinkState.STALLED, NotableLinkReason.STALLED),
    (LinkState.REFUSED, NotableLinkReason.REFUSED),
    (LinkState.UNREACHABLE, NotableLinkReason.UNREACHABLE),
)


def _notable(row: LinkRow, reason: NotableLinkReason) -> NotableLink:
    return NotableLink(
        sender=row.sender,
        receiver=row.receiver,
        sender_node=row.sender_node,
        receiver_node=row.receiver_node,
        shared_node=row.shared_node,
        raw_bytes_per_second=row.raw_bytes_per_second,
        wire_bytes_per_second=row.wire_bytes_per_second,
        batches_per_second=row.batches_per_second,
        lost_batches=row.lost_batches,
        resent_batches=row.resent_batches,
        rtt_p50_seconds=row.rtt_p50_seconds,
        rtt_p99_seconds=row.rtt_p99_seconds,
        reason=reason,
        state_seconds=round(row.state_seconds, 1) if row.state in PROBLEM_LINK_STATES else 0.0,
        message=row.state_message if row.state in PROBLEM_LINK_STATES else "",
        tcp_retransmitted_segments=row.tcp_retransmitted_segments,
        tcp_srtt_seconds=row.tcp_srtt_seconds,
    )


def notable_links(rows: Sequence[LinkRow]) -> list[NotableLink]:
    """Lossy links, then the slowest, the highest-RTT, and links sharing a node; each link
    once (its first reason), never more than `MAX_NOTABLE_LINKS`."""
    chosen: dict[tuple[str, str], NotableLink] = {}

    def take(candidates: Sequence[LinkRow], reason: NotableLinkReason, limit: int) -> None:
        taken = 0
        for row in candidates:
            if len(chosen) >= MAX_NOTABLE_LINKS or taken >= limit:
                return
            if row.key not in chosen:
                chosen[row.key] = _notable(row, reason)
                taken += 1

    for state, reason in _PROBLEMS:
        troubled = sorted(
            (row for row in rows if row.state is state), key=lambda r: (-r.state_seconds, r.key)
        )
        take(troubled, reason, MAX_NOTABLE_LINKS)
    lossy = sorted((row for row in rows if row.lost_batches > 0), key=lambda r: -r.lost_batches)
    take(lossy, NotableLinkReason.LOSSY, MAX_NOTABLE_LINKS)
    if len(rows) > 1:
        slowest = sorted(rows, key=lambda row: (row.raw_bytes_per_second, row.key))
        take(slowest, NotableLinkReason.SLOWEST, SLOWEST_LINKS_LISTED)
        measured = [row for row in rows if row.rtt_samples > 0]
        highest = sorted(measured, key=lambda row: (-row.rtt_p99_seconds, row.key))
        take(highest, NotableLinkReason.HIGHEST_RTT, HIGHEST_RTT_LISTED)
    take([row for row in rows if row.shared_node], NotableLinkReason.SHARED_NODE, MAX_NOTABLE_LINKS)
    return list(chosen.values())


def links_status(rows: Sequence[LinkRow]) -> LinksStatus:
    """The bounded summary of `rows` kept in `status.links`."""
    rtts = sorted(row.rtt_p99_seconds for row in rows if row.rtt_samples > 0)
    return LinksStatus(
        links=len(rows),
        sharing_node=sum(1 for row in rows if row.shared_node),
        stalled=sum(1 for row in rows if row.state is LinkState.STALLED),
        unreachable=sum(1 for row in rows if row.state is LinkState.UNREACHABLE),
        refused=sum(1 for row in rows if row.state is LinkState.REFUSED),
        spread=spread_of(row.raw_bytes_per_second for row in rows),
        rtt_p99=SecondsSpread(
            min_seconds=rtts[0] if rtts else 0.0,
            p50_seconds=percentile(rtts, 0.5),
            max_seconds=rtts[-1] if rtts else 0.0,
        ),
        notable=notable_links(rows),
    )
