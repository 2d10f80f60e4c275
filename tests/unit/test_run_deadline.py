"""A bounded run's one deadline reaches workers that start during it (issue 19): the
run ConfigMap is cleared before pods of a new template start, kept through a scale,
read by the worker's loader, and ends a late worker's run with the others'."""

from __future__ import annotations

import time
from typing import Any

import pytest

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator.reconcile import OperatorContext, desired_state
from w5xde.operator.resources.metadata import ClusterRef
from w5xde.operator.resources.run_config import render_run_config
from w5xde.operator.worker_config import worker_config_json
from w5xde.worker import process
from w5xde.worker.config import ConfigError, load_worker_config

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1", generation=1)
CONTEXT = OperatorContext(default_image="w5xde-worker:1", server_version=(1, 37))


def _desired(spec: CompressionClusterSpec, existing: dict[str, Any] | None = None) -> Any:
    return desired_state(
        CLUSTER, spec, CONTEXT, existing_statefulset=existing, cluster_key="k" * 64
    )


def _statefulset(desired: Any) -> dict[str, Any]:
    found: dict[str, Any] = next(o for o in desired.objects if o["kind"] == "StatefulSet")
    return found


def test_a_new_template_clears_the_deadline_and_a_scale_keeps_it() -> None:
    spec = CompressionClusterSpec.model_validate({"workers": 2, "duration": "60s"})
    first = _desired(spec)
    assert first.run_config == render_run_config(CLUSTER, None)
    assert first.run_config["data"] == {"deadline": ""}
    running = _statefulset(first)
    scaled = _desired(spec.model_copy(update={"workers": 5}), running)
    assert scaled.scaled_from == 2
    assert scaled.run_config is None  # the run and its deadline go on
    changed = _desired(spec.model_copy(update={"duration": "90s"}), running)
    assert changed.rolled
    assert changed.run_config is not None


def test_the_pods_read_the_deadline_from_the_run_config_map() -> None:
    container = _statefulset(_desired(CompressionClusterSpec()))["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["W5XDE_RUN_DEADLINE"]["valueFrom"]["configMapKeyRef"] == {
        "name": "demo-run",
        "key": "deadline",
        "optional": True,
    }
    assert render_run_config(CLUSTER, 1767268800.25)["data"] == {"deadline": "1767268800.250"}


def _env(**extra: str) -> dict[str, str]:
    spec = CompressionClusterSpec.model_validate({"duration": "60s"})
    return {"W5XDE_CONFIG": worker_config_json(CLUSTER, spec, 4), "W5XDE_NAME": "demo-3", **extra}


def test_the_loader_reads_the_deadline_and_refuses_a_bad_one() -> None:
    assert load_worker_config(_env()).run_deadline is None
    assert load_worker_config(_env(W5XDE_RUN_DEADLINE="")).run_deadline is None
    assert load_worker_config(_env(W5XDE_RUN_DEADLINE="1767268800.5")).run_deadline == 1767268800.5
    with pytest.raises(ConfigError, match="W5XDE_RUN_DEADLINE"):
        load_worker_config(_env(W5XDE_RUN_DEADLINE="soon"))


def test_a_worker_started_late_stops_at_the_run_deadline_not_a_duration_later() -> None:
    started = time.monotonic()
    own = load_worker_config(_env())
    assert process._deadline(own, started) == pytest.approx(started + 60)
    late = load_worker_config(_env(W5XDE_RUN_DEADLINE=f"{time.time() + 15:.3f}"))
    assert process._deadline(late, started) == pytest.approx(started + 15, abs=0.5)
    over = load_worker_config(_env(W5XDE_RUN_DEADLINE=f"{time.time() - 5:.3f}"))
    assert process._deadline(over, started) == pytest.approx(started, abs=0.5)
