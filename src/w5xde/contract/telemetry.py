"""Prometheus conventions shared by the worker and the operator (docs/metrics.md).

Every W5XDE process serves prometheus-client's process and platform collectors
(`process_*`, `python_info`) next to its own `w5xde_*` families, and a
`w5xde_build_info{version, component}` gauge of 1, so a dashboard or an alert can
tell which build a target runs and whether its process restarted.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import InfoMetricFamily, Metric

from w5xde import __version__

#: The operator's `/metrics` port (the chart's `metrics.port`, named `metrics`).
OPERATOR_METRICS_PORT = 8080
#: The operator's kopf liveness port, `/healthz` (the chart's `health.port`, named `health`).
OPERATOR_HEALTH_PORT = 8081


def build_info(component: str) -> InfoMetricFamily:
    """`w5xde_build_info{version, component}` = 1."""
    family = InfoMetricFamily("w5xde_build", "The W5XDE build a process runs (always 1).")
    family.add_metric([], {"version": __version__, "component": component})
    return family


class BuildInfoCollector:
    """Serves `build_info(component)` from a registry."""

    def __init__(self, component: str) -> None:
        self._component = component

    def collect(self) -> Iterator[Metric]:
        yield build_info(self._component)


def standard_registry(component: str) -> CollectorRegistry:
    """A registry with the process and platform collectors and the build info.

    A private `CollectorRegistry()` starts empty, so without this the `process_*`
    series every Prometheus user expects (CPU seconds, RSS, open fds, start time)
    would be missing.
    """
    registry = CollectorRegistry()
    # `*_created` gauges double the series of every counter and histogram and no
    # query here reads them (Prometheus gets a counter's resets from the samples).
    disable_created_metrics()  # type: ignore[no-untyped-call]
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    registry.register(BuildInfoCollector(component))
    return registry
