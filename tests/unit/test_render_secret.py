from __future__ import annotations

from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.secret import KEY_BYTES, new_cluster_key, render_secret
from w5xde.worker.config import MIN_KEY_BYTES, load_cluster_key

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")


def test_secret_carries_the_given_key() -> None:
    secret = render_secret(CLUSTER, "abc")
    assert secret["metadata"]["name"] == "demo-key"
    assert secret["type"] == "Opaque"
    assert secret["stringData"] == {"key": "abc"}


def test_new_keys_are_long_random_and_accepted_by_the_worker() -> None:
    first, second = new_cluster_key(), new_cluster_key()
    assert first != second
    assert len(first) == 2 * KEY_BYTES
    assert load_cluster_key({"W5XDE_CLUSTER_KEY": first}) == first.encode()
    assert len(first) >= MIN_KEY_BYTES
