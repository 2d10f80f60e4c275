from __future__ import annotations

from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.service_account import render_service_account

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")


def test_service_account_is_named_for_the_workers() -> None:
    account = render_service_account(CLUSTER)
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["name"] == "demo-worker"
    # Workers never call the API server: no token is mounted into their pods.
    assert account["automountServiceAccountToken"] is False
