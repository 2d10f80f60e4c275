"""The desired state: what is applied, what is withheld, what counts as roll or scale."""

from __future__ import annotations

from typing import Any

from w5xde.api.v1alpha1 import CompressionClusterSpec
from w5xde.operator.reconcile import OperatorContext, desired_state, spec_problems
from w5xde.operator.resources.metadata import ClusterRef

CLUSTER = ClusterRef(name="demo", namespace="ns1", uid="uid-1", generation=1)
NEW = OperatorContext(default_image="w5xde-worker:1", server_version=(1, 37))


def _desired(
    spec: CompressionClusterSpec,
    existing: dict[str, Any] | None = None,
    context: OperatorContext = NEW,
    completed: bool = False,
) -> Any:
    return desired_state(
        CLUSTER,
        spec,
        context,
        existing_statefulset=existing,
        cluster_key="k" * 64,
        completed=completed,
    )


def _statefulset(desired: Any) -> dict[str, Any]:
    found: dict[str, Any] = next(o for o in desired.objects if o["kind"] == "StatefulSet")
    return found


def test_first_reconcile_applies_everything() -> None:
    desired = _desired(CompressionClusterSpec())
    assert [obj["kind"] for obj in desired.objects] == [
        "ServiceAccount",
        "Service",
        "StatefulSet",
    ]
    assert desired.secret["kind"] == "Secret"
    assert desired.problems == ()
    assert desired.fatal is None
    assert not desired.rolled
    assert desired.scaled_from is None


def test_spec_image_overrides_the_default() -> None:
    spec = CompressionClusterSpec.model_validate({"image": "mine:2"})
    container = _statefulset(_desired(spec))["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "mine:2"


def test_scaling_keeps_the_template_and_reports_the_scale() -> None:
    running = _statefulset(_desired(CompressionClusterSpec()))
    scaled = _desired(CompressionClusterSpec.model_validate({"workers": 6}), existing=running)
    statefulset = _statefulset(scaled)
    assert statefulset["spec"]["replicas"] == 6
    assert statefulset["spec"]["template"] == running["spec"]["template"]
    assert scaled.scaled_from == 4
    assert not scaled.rolled


def test_spec_change_rolls_with_the_new_worker_count() -> None:
    running = _statefulset(_desired(CompressionClusterSpec()))
    spec = CompressionClusterSpec.model_validate({"workers": 5, "compression": {"level": 9}})
    changed = _desired(spec, existing=running)
    assert changed.rolled
    assert changed.template_hash != running["metadata"]["annotations"]["w5xde.io/template-hash"]
    annotations = _statefulset(changed)["metadata"]["annotations"]
    assert annotations["w5xde.io/template-workers"] == "5"


def test_unsafe_sysctls_withhold_the_statefulset_and_degrade() -> None:
    spec = CompressionClusterSpec.model_validate(
        {"network": {"sysctls": {"net.ipv4.tcp_congestion_control": "bbr"}}}
    )
    desired = _desired(spec)
    assert "StatefulSet" not in [obj["kind"] for obj in desired.objects]
    assert desired.problems[0].reason == "UnsafeSysctls"
    assert "net.ipv4.tcp_congestion_control" in desired.problems[0].message
    allowing = OperatorContext(
        default_image="w", server_version=(1, 37), allowed_unsafe_sysctls=("net.ipv4.*",)
    )
    assert "StatefulSet" in [obj["kind"] for obj in _desired(spec, context=allowing).objects]


def test_old_server_runs_without_tcp_memory_but_says_so() -> None:
    old = OperatorContext(default_image="w", server_version=(1, 31))
    desired = _desired(CompressionClusterSpec(), context=old)
    pod = _statefulset(desired)["spec"]["template"]["spec"]
    assert "sysctls" not in pod["securityContext"]
    assert [problem.reason for problem in desired.problems] == ["SocketSysctlsOmitted"]


def test_no_image_anywhere_is_fatal() -> None:
    problems, fatal = spec_problems(
        CompressionClusterSpec(), OperatorContext(default_image="", server_version=(1, 37))
    )
    assert problems == ()
    assert fatal is not None
    assert fatal.reason == "NoWorkerImage"
    desired = _desired(
        CompressionClusterSpec(), context=OperatorContext(default_image="", server_version=(1, 37))
    )
    assert "StatefulSet" not in [obj["kind"] for obj in desired.objects]


def test_completed_run_keeps_zero_replicas() -> None:
    desired = _desired(CompressionClusterSpec.model_validate({"duration": "60s"}), completed=True)
    assert _statefulset(desired)["spec"]["replicas"] == 0
