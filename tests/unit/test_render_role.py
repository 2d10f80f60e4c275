"""The workers may get and patch their own cluster's status, and nothing else."""

from __future__ import annotations

from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.role import render_role

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")


def test_role_is_limited_to_this_clusters_status() -> None:
    role = render_role(CLUSTER)
    assert role["kind"] == "Role"
    assert role["metadata"]["name"] == "demo-worker"
    assert role["rules"] == [
        {
            "apiGroups": ["w5xde.io"],
            "resources": ["compressionclusters/status"],
            "resourceNames": ["demo"],
            "verbs": ["get", "patch"],
        }
    ]


def test_another_cluster_gets_its_own_resource_name() -> None:
    other = render_role(ClusterRef(name="other", namespace="ns1", uid="u2"))
    assert other["rules"][0]["resourceNames"] == ["other"]
