"""The run ConfigMap: a bounded run's one deadline, for workers that start during it.

Workers read it as they start (`W5XDE_RUN_DEADLINE`, an optional `configMapKeyRef`),
so a worker added by a scale, or restarted, stops at the run's deadline rather than a
`duration` after its own start.  The change handlers clear it ("") before pods of a new
template start; the fold loop writes the deadline once the run has started
(docs/operator.md, "Runs").
"""

from __future__ import annotations

from typing import Any

from w5xde.contract.endpoints import RUN_DEADLINE_FIELD
from w5xde.operator.resources.metadata import ClusterRef, object_meta


def render_run_config(cluster: ClusterRef, deadline: float | None) -> dict[str, Any]:
    """`deadline` in epoch seconds; None while the run has not started (or is unbounded)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(cluster, cluster.run_config),
        "data": {RUN_DEADLINE_FIELD: "" if deadline is None else f"{deadline:.3f}"},
    }
