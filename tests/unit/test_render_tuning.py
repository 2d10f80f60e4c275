"""Issue 12's knobs travel from a spec (or `w5xde local`) to the worker unchanged."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    AUTO_BUFFER_CAP_BYTES,
    Balance,
    CompressionClusterSpec,
    CompressionSpec,
    NetworkSpec,
)
from w5xde.local.arguments import add_local_arguments
from w5xde.local.run import UsageError, plan_from_args
from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.sysctl_policy import TCP_RMEM, TCP_WMEM, plan_sysctls
from w5xde.operator.worker_config import worker_config_json
from w5xde.worker.config import load_worker_config

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1")


def test_auto_level_buffers_and_capacity_reach_the_worker() -> None:
    spec = CompressionClusterSpec.model_validate(
        {
            "compression": {"level": "auto", "threads": 2},
            "network": {"socketBufferBytes": "auto", "chunkBytes": 16 << 20},
            "workload": {"balance": "capacity"},
        }
    )
    config = load_worker_config(
        {"W5XDE_CONFIG": worker_config_json(CLUSTER, spec, 4), "W5XDE_NAME": "demo-1"}
    )
    assert config.compression.auto_level
    assert config.compression.fixed_level == 1  # where auto starts
    assert config.network.auto_buffers
    assert config.network.fixed_buffer_bytes == 0
    assert config.workload.balance is Balance.CAPACITY


def test_fixed_values_keep_their_meaning() -> None:
    spec = CompressionSpec.model_validate({"level": "6"})
    assert (spec.level, spec.auto_level, spec.fixed_level) == (6, False, 6)
    assert not CompressionSpec(codec="none", level="auto").auto_level
    network = NetworkSpec.model_validate({"socketBufferBytes": 1 << 20})
    assert (network.auto_buffers, network.fixed_buffer_bytes) == (False, 1 << 20)
    assert CompressionClusterSpec().workload.balance is Balance.EVEN


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"compression": {"level": "fast"}}, "compression.level"),
        ({"compression": {"level": 23}}, "compression.level"),
        ({"compression": {"level": True}}, "compression.level"),
        ({"network": {"socketBufferBytes": "big"}}, "network.socketBufferBytes"),
        ({"network": {"socketBufferBytes": -1}}, "network.socketBufferBytes"),
        ({"workload": {"balance": "fair"}}, "balance"),
    ],
)
def test_bad_values_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        CompressionClusterSpec.model_validate(data)


def test_auto_buffers_give_autotuning_room_up_to_the_cap() -> None:
    plan = plan_sysctls(NetworkSpec(socket_buffer_bytes="auto"), (1, 32))
    values = dict(plan.sysctls)
    assert values[TCP_RMEM].split()[-1] == str(AUTO_BUFFER_CAP_BYTES)
    assert values[TCP_WMEM].split()[-1] == str(AUTO_BUFFER_CAP_BYTES)


def _local(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_local_arguments(parser)
    return parser.parse_args(list(argv))


def test_local_takes_the_same_values() -> None:
    plan = plan_from_args(
        _local("--level", "auto", "--socket-buffer", "auto", "--balance", "capacity")
    )
    assert plan.compression.auto_level
    assert plan.network.auto_buffers
    assert plan.workload.balance is Balance.CAPACITY
    with pytest.raises(UsageError, match="--level"):
        plan_from_args(_local("--level", "fastest"))
    with pytest.raises(UsageError, match="--balance"):
        plan_from_args(_local("--balance", "fair"))
