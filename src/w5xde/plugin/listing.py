"""`kubectl w5xde status` without a name, `-o json|yaml|wide`, and `--version`: pure views.

Like `kubectl get`: a table of the namespace's clusters (`-A` adds a NAMESPACE column),
`wide` adds the spec's shape (workers, placement, path) and the links, and `json` /
`yaml` print the objects themselves (a `List` for several), so scripts read what the
API server returned.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.table import Table

from w5xde.plugin.source import OperatorDeployment

#: The columns of `kubectl get cc` (the CRD's printer columns), then `-o wide`'s.
COLUMNS = ("NAME", "READY", "PHASE", "THROUGHPUT", "RATIO", "BATCHES/S", "AGE")
WIDE_COLUMNS = ("WORKERS", "PLACEMENT", "PATH", "LINKS", "SHARING NODE", "LAST RUN")


def age(created: str, now: datetime | None = None) -> str:
    """kubectl's short age: 45s, 12m, 3h, 5d."""
    if not created:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def row(item: Mapping[str, Any], *, wide: bool, now: datetime | None = None) -> list[str]:
    meta = item.get("metadata") or {}
    status = item.get("status") or {}
    spec = item.get("spec") or {}
    ratio = status.get("compressionRatio")
    batches = status.get("batchesPerSecond")
    cells = [
        str(meta.get("name", "")),
        str(status.get("ready", "")),
        str(status.get("phase", "")),
        str(status.get("throughput", "")),
        f"{ratio:.2f}" if isinstance(ratio, (int, float)) and ratio else "",
        f"{batches:,.0f}" if isinstance(batches, (int, float)) and batches else "",
        age(str(meta.get("creationTimestamp", "")), now),
    ]
    if wide:
        links = status.get("links") or {}
        runs = status.get("runs") or []
        cells += [
            str(spec.get("workers", 4)),
            str(spec.get("placement", "preferred")),
            str((spec.get("network") or {}).get("path", "pod")),
            str(links.get("links", 0)),
            str(links.get("sharingNode", 0)),
            str(runs[-1].get("id", "")) if runs else "",
        ]
    return cells


def clusters_table(
    items: Sequence[Mapping[str, Any]], *, all_namespaces: bool, wide: bool
) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    columns = (("NAMESPACE",) if all_namespaces else ()) + COLUMNS + (WIDE_COLUMNS if wide else ())
    for column in columns:
        table.add_column(column, no_wrap=True)
    now = datetime.now(UTC)
    for item in items:
        namespace = [str((item.get("metadata") or {}).get("namespace", ""))]
        table.add_row(*(namespace if all_namespaces else []), *row(item, wide=wide, now=now))
    return table


def as_list(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several objects as kubectl prints them: a v1 List."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {}}


def dump(document: Mapping[str, Any], output: str) -> str:
    """`-o json` or `-o yaml` of one object or a List, ending in a newline."""
    if output == "json":
        return json.dumps(document, indent=2, sort_keys=False) + "\n"
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)


def operator_lines(operators: Sequence[OperatorDeployment] | None) -> list[str]:
    """`--version`'s server part: each operator Deployment's version, image and readiness."""
    if operators is None:
        return ["operator: unknown (not allowed to list Deployments)"]
    if not operators:
        return [
            "operator: not installed (no Deployment labelled"
            " app.kubernetes.io/part-of=w5xde,app.kubernetes.io/component=operator)"
        ]
    return [
        f"operator: {item.version or '?'} ({item.namespace}/{item.name}, image {item.image},"
        f" {item.ready}/{item.desired} ready)"
        for item in operators
    ]


def unreconciled(cluster: Mapping[str, Any]) -> bool:
    """No operator has acted on the cluster's current spec: no status, or an older one."""
    generation = (cluster.get("metadata") or {}).get("generation")
    observed = (cluster.get("status") or {}).get("observedGeneration")
    return observed is None or (generation is not None and observed != generation)


def operator_warning(operators: Sequence[OperatorDeployment] | None) -> str | None:
    """A warning for `status` when no operator replica is ready: nothing will reconcile
    the clusters, so a Pending phase or stale figures are the operator's absence, not
    the workers'.  None when one is ready or when the plugin cannot tell."""
    if operators is None:
        return None
    if not operators:
        return (
            "warning: no w5xde operator is installed (no Deployment labelled"
            " app.kubernetes.io/component=operator, part-of=w5xde): clusters are not"
            " reconciled; see `helm install` in README.md"
        )
    if any(item.ready > 0 for item in operators):
        return None
    names = ", ".join(f"{item.namespace}/{item.name}" for item in operators)
    return (
        f"warning: the w5xde operator is not running ({names}: 0 ready): clusters are not"
        f" reconciled; `kubectl describe pod -n {operators[0].namespace}"
        " -l app.kubernetes.io/component=operator` says why (e.g. ImagePullBackOff)"
    )
