from __future__ import annotations

from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.role_binding import render_role_binding

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")


def test_binding_ties_the_role_to_the_workers_account() -> None:
    binding = render_role_binding(CLUSTER)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "demo-worker",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "demo-worker", "namespace": "ns1"}
    ]
