"""A real Prometheus scrapes a running cluster on the test bed through the chart's monitors.

One helm install (operator in its own namespace, one served namespace), one
CompressionCluster of two workers, one Prometheus whose scrape configs are
generated from the PodMonitors the same chart renders and whose rule file is the
chart's PrometheusRule. Then every query of the chart's dashboard must parse and
return series (except panels documented "Empty when healthy"), every rule must
evaluate without error against the real series, and no W5XDE alert may be pending
or firing on a healthy cluster.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import prom
from testbed.fixtures import Testbed

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

OPERATOR_LABELS = "app.kubernetes.io/part-of=w5xde,app.kubernetes.io/component=operator"
SCRAPE_INTERVAL = "2s"
#: Grafana's $__rate_interval for a 2 s scrape: max(4 x scrape interval, step + scrape).
RATE_INTERVAL = "10s"
WORKERS = 2
CLUSTER = "mon"


def get_json(testbed: Testbed, *args: str) -> dict[str, Any]:
    result = testbed.kubectl("get", *args, "-o", "json", check=False)
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


@pytest.fixture(scope="module")
def installed(testbed: Testbed) -> Iterator[tuple[str, str, str]]:
    """(release, operator namespace, served namespace) with the chart installed."""
    prom.require(prom.PROMETHEUS, prom.PROMTOOL, prom.HELM)
    testbed.wait_for(
        lambda: not get_json(testbed, "pods", "-A", "-l", OPERATOR_LABELS).get("items"),
        90,
        "no other W5XDE operator running (it would reconcile our cluster too)",
    )
    suffix = uuid.uuid4().hex[:6]
    operator_ns, served_ns, release = f"t-{suffix}-mon-op", f"t-{suffix}-mon", f"w5xde-mon-{suffix}"
    testbed.kubectl("create", "namespace", operator_ns)
    testbed.kubectl("create", "namespace", served_ns)
    testbed.kubectl("label", "namespace", served_ns, "pod-security.kubernetes.io/enforce=baseline")
    ours = testbed.kubectl("get", "crd", "compressionclusters.w5xde.io", check=False)
    kopf = testbed.kubectl("get", "crd", "kopfpeerings.kopf.dev", check=False)
    try:
        testbed.helm(
            "install", release, str(prom.CHART), "--namespace", operator_ns,
            "--values", str(prom.REPO / "tests" / "chart_values" / "local-images.yaml"),
            "--set", f"watchNamespaces={{{served_ns}}}",
            "--set", f"crds.install={str(ours.returncode != 0).lower()}",
            "--set", f"crds.kopfPeering={str(kopf.returncode != 0).lower()}",
            "--wait", "--timeout", "3m",
            timeout=240,
        )  # fmt: skip
        yield release, operator_ns, served_ns
    finally:
        testbed.kubectl("delete", "cc", "--all", "-n", served_ns, "--wait=true",
                        "--timeout=60s", check=False)  # fmt: skip
        testbed.helm("uninstall", release, "--namespace", operator_ns, check=False)
        for namespace in (served_ns, operator_ns):
            testbed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def chart_objects(installed: tuple[str, str, str]) -> list[dict[str, Any]]:
    """The same release rendered with its monitoring objects on (the bed has no
    monitoring.coreos.com CRDs, so they are translated instead of applied)."""
    release, operator_ns, served_ns = installed
    return prom.render_chart(
        release, operator_ns,
        "--set", f"watchNamespaces={{{served_ns}}}",
        "--set", "podMonitor.enabled=true",
        "--set", f"podMonitor.interval={SCRAPE_INTERVAL}",
        "--set", "prometheusRule.enabled=true",
        "--set", "grafanaDashboard.enabled=true",
    )  # fmt: skip


@pytest.fixture(scope="module")
def prometheus(
    testbed: Testbed, chart_objects: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[prom.Prometheus]:
    directory: Path = tmp_path_factory.mktemp("prometheus")
    (directory / "rules.yaml").write_text(yaml.safe_dump(prom.rule_groups(chart_objects)))
    config = {
        "global": {"scrape_interval": "10s", "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(directory / "rules.yaml")],
        "scrape_configs": prom.scrape_configs(chart_objects, testbed.kubeconfig),
    }
    server = prom.Prometheus(directory, config)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def running_cluster(testbed: Testbed, installed: tuple[str, str, str]) -> str:
    _, _, served_ns = installed
    manifest = {
        "apiVersion": "w5xde.io/v1alpha1",
        "kind": "CompressionCluster",
        "metadata": {"name": CLUSTER},
        "spec": {"workers": WORKERS, "statusIntervalSeconds": 2},
    }
    testbed.kubectl("apply", "-n", served_ns, "-f", "-", input=json.dumps(manifest))

    def running() -> bool:
        status = get_json(testbed, "cc", CLUSTER, "-n", served_ns).get("status") or {}
        return (
            status.get("ready") == f"{WORKERS}/{WORKERS}"
            and status.get("phase") == "Running"
            and bool(status.get("throughputBytesPerSecond"))
        )

    testbed.wait_for(running, 180, f"cc/{CLUSTER} Running {WORKERS}/{WORKERS} with throughput")
    return served_ns


def test_scrape_targets_follow_the_chart_monitors(
    testbed: Testbed,
    prometheus: prom.Prometheus,
    running_cluster: str,
    installed: tuple[str, str, str],
) -> None:
    release, operator_ns, served_ns = installed

    seen: list[list[dict[str, Any]]] = [[]]

    def all_up() -> list[dict[str, Any]] | None:
        seen[0] = prometheus.targets()
        targets = [t for t in seen[0] if t["health"] == "up"]
        workers = [t for t in targets if t["labels"].get("compressioncluster") == CLUSTER]
        job = f"{operator_ns}/{release}-operator"
        operators = [t for t in targets if t["labels"]["job"] == job]
        return targets if len(workers) == WORKERS and len(operators) == 1 else None

    deadline = time.monotonic() + 90
    while (targets := all_up()) is None:
        if time.monotonic() > deadline:
            found = [(t["scrapeUrl"], t["labels"], t["health"], t["lastError"]) for t in seen[0]]
            dropped = prometheus.api("targets", state="dropped")["droppedTargets"][:5]
            pytest.fail(
                f"not {WORKERS} worker targets and the operator up after 90 s; active: {found}; "
                f"some dropped: {[d['discoveredLabels'] for d in dropped]}\n"
                f"{prometheus.log.read_text()[-2000:]}"
            )
        time.sleep(1)
    for target in targets:
        labels = target["labels"]
        assert "cluster" not in labels, labels  # the relabeling writes `compressioncluster`
        if labels.get("compressioncluster"):
            assert labels["namespace"] == served_ns
            assert labels["pod"].startswith(f"{CLUSTER}-")
            assert labels["job"] == f"{operator_ns}/{release}-workers"
    # Only our pods: the selector keeps neither other pods nor other ports.
    assert {t["labels"]["namespace"] for t in targets} == {operator_ns, served_ns}
    # The conventions every target serves.
    for component in ("worker", "operator"):
        assert prometheus.query(f'w5xde_build_info{{component="{component}"}}'), component
    assert prometheus.query('process_resident_memory_bytes{compressioncluster="mon"}')


def test_every_dashboard_query_returns_data(
    testbed: Testbed,
    prometheus: prom.Prometheus,
    running_cluster: str,
    chart_objects: list[dict[str, Any]],
) -> None:
    board = prom.dashboard(chart_objects)
    substitutions = {
        "namespace": running_cluster,
        "compressioncluster": CLUSTER,
        "__rate_interval": RATE_INTERVAL,
        "__interval": SCRAPE_INTERVAL,
        "__range": "5m",
        "datasource": "prometheus",
    }
    # The template variables' own queries: label_values(metric, label) -> series of that metric.
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        metric, label = re.fullmatch(
            r"label_values\((.+), (\w+)\)", variable["definition"]
        ).groups()  # type: ignore[union-attr]
        metric = metric.replace("$namespace", running_cluster)
        values = {s["metric"].get(label) for s in prometheus.query(metric)}
        assert substitutions[variable["name"]] in values, (variable["name"], values)

    # Every worker delivering, as Prometheus sees it (two scrapes in the rate window).
    raw = f'w5xde_received_raw_bytes_total{{compressioncluster="{CLUSTER}"}}'
    flowing = f"rate({raw}[{RATE_INTERVAL}]) > 0"
    testbed.wait_for(
        lambda: len(prometheus.query(flowing)) == WORKERS,
        60,
        f"{flowing} for every worker",
        interval=1,
    )
    queries = prom.panel_queries(board, substitutions)
    expected_empty = {
        id(p) for p, _ in queries if prom.EMPTY_WHEN_HEALTHY in p.get("description", "")
    }

    def answers() -> dict[str, list[dict[str, Any]]] | None:
        results = {expression: prometheus.query(expression) for _, expression in queries}
        missing = [e for (p, e) in queries if not results[e] and id(p) not in expected_empty]
        return None if missing else results

    started = time.monotonic()
    try:
        results = testbed.wait_for(
            answers, 120, "every dashboard query to return series", interval=2
        )
    except BaseException:
        # Say which panels stayed empty (a parse error raises PromQLError with its text).
        empty = [
            f"{panel['title']}: {expression}"
            for panel, expression in queries
            if id(panel) not in expected_empty and not prometheus.query(expression)
        ]
        pytest.fail("dashboard panels without data:\n" + "\n".join(empty), pytrace=False)
    print(f"all {len(queries)} dashboard queries answered after {time.monotonic() - started:.1f}s")
    by_title = {panel["title"]: results[expression] for panel, expression in queries}
    # Values a healthy cluster must show, not only "some series".
    (throughput,) = by_title["Throughput"]
    assert float(throughput["value"][1]) > 0
    (ratio,) = by_title["Compression ratio"]
    assert float(ratio["value"][1]) > 1.0  # the synthetic mixed profile compresses
    (lost,) = by_title["Lost batches (time range)"]
    assert float(lost["value"][1]) == 0
    per_worker = by_title["Throughput per worker (raw)"]
    assert {s["metric"]["pod"] for s in per_worker} == {f"{CLUSTER}-{i}" for i in range(WORKERS)}
    for series in by_title["Network time per worker (busy ratio)"]:
        assert 0 <= float(series["value"][1]) <= 4 * WORKERS


def test_alert_rules_evaluate_against_real_series(
    testbed: Testbed,
    prometheus: prom.Prometheus,
    running_cluster: str,
    installed: tuple[str, str, str],
    chart_objects: list[dict[str, Any]],
) -> None:
    groups = prom.rule_groups(chart_objects)["groups"]

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        done = all(r.get("lastEvaluation", "").startswith("20") for r in rules)
        return rules if done and rules else None

    rules = testbed.wait_for(evaluated, 60, "every rule evaluated once", interval=1)
    assert len(rules) == sum(len(g["rules"]) for g in groups)
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    # Each selector of each rule matches real series: a renamed metric or label
    # would leave an alert that can never fire.
    for group in groups:
        for rule in group["rules"]:
            selectors = re.findall(r"\b((?:w5xde_[a-z0-9_]+|up)(?:\{[^}]*\})?)", rule["expr"])
            assert selectors, rule["alert"]
            for selector in selectors:
                if "errors_total" in selector:
                    continue  # no errors on a healthy bed: the series appears with the first
                # Failed pulls are absent when healthy; the same family with `ok` is not.
                healthy = selector.replace('result="failed"', 'result="ok"')
                assert prometheus.query(healthy), f"{rule['alert']}: {healthy} matches no series"
    alerts = [
        a
        for a in prometheus.api("alerts")["alerts"]
        if a["labels"]["alertname"].startswith("W5XDE")
    ]
    assert not alerts, f"alerts on a healthy cluster: {alerts}"
