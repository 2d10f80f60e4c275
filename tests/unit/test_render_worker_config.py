"""The rendered config is what the worker's own loader accepts, field for field."""

from __future__ import annotations

import json

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.worker_config import render_worker_config, worker_config_json
from w5xde.worker.config import load_worker_config

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")


def test_defaults_load_in_the_worker() -> None:
    config = load_worker_config(
        {
            "W5XDE_CONFIG": worker_config_json(CLUSTER, CompressionClusterSpec(), 4),
            "W5XDE_NAME": "demo-2",
            "W5XDE_NODE_NAME": "node-a",
        }
    )
    assert config.name == "demo-2"
    assert config.node == "node-a"
    assert config.index() == 2
    assert config.workers == 4
    assert config.cluster_id == "ns1/demo"
    assert config.peer_list() == [
        f"demo-{index}.demo.ns1.svc.cluster.local:7070" for index in range(4)
    ]
    assert config.reporting is not None
    assert config.reporting.interval_seconds == 10
    assert config.duration_seconds is None
    assert config.metrics_port == 9090


def test_edge_spec_survives_the_round_trip() -> None:
    spec = CompressionClusterSpec.model_validate(
        {
            "workers": 7,
            "logMode": "3",
            "duration": "1m30s",
            "statusIntervalSeconds": 2,
            "workload": {"source": "file", "path": "/data", "topology": "pairs"},
            "compression": {"codec": "none", "level": -7, "threads": 0},
            "network": {"port": 7100, "socketBufferBytes": 0, "chunkBytes": 1 << 20},
        }
    )
    config = load_worker_config(
        {"W5XDE_CONFIG": worker_config_json(CLUSTER, spec, 7), "W5XDE_NAME": "demo-6"}
    )
    assert config.log_mode.value == "verbose"
    assert config.duration_seconds == 90
    assert config.workload == spec.workload
    assert config.compression == spec.compression
    assert config.network == spec.network
    assert config.listen_port() == 7100
    assert config.peer_list()[6] == "demo-6.demo.ns1.svc.cluster.local:7100"


def test_json_is_stable_for_the_template_hash() -> None:
    spec = CompressionClusterSpec()
    assert worker_config_json(CLUSTER, spec, 4) == worker_config_json(CLUSTER, spec, 4)
    assert json.loads(worker_config_json(CLUSTER, spec, 4)) == render_worker_config(
        CLUSTER, spec, 4
    )
