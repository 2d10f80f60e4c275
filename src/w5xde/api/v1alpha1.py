"""`w5xde.io/v1alpha1` CompressionCluster spec.

Field names are the CR's camelCase names (aliases); Python code uses snake_case.
Every model forbids unknown fields so a typo is an error that names the field.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

GROUP = "w5xde.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CompressionCluster"
PLURAL = "compressionclusters"
SINGULAR = "compressioncluster"
SHORT_NAMES = ["cc"]

MIB = 1024 * 1024


class ApiModel(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class LogMode(StrEnum):
    SILENT = "silent"
    NORMAL = "normal"
    VERBOSE = "verbose"


_LOG_MODE_ALIASES = {"1": LogMode.SILENT, "2": LogMode.NORMAL, "3": LogMode.VERBOSE}


def parse_log_mode(value: object) -> object:
    """Accept the seed's numeric modes (1/2/3, as str or int) as aliases of the names."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        return _LOG_MODE_ALIASES.get(lowered, lowered)
    return value


LogModeField = Annotated[LogMode, BeforeValidator(parse_log_mode)]


class Source(StrEnum):
    SYNTHETIC = "synthetic"
    FILE = "file"


class Profile(StrEnum):
    TEXT = "text"
    JSON_LOGS = "json-logs"
    TENSORS_F32 = "tensors-f32"
    MIXED = "mixed"
    RANDOM = "random"


class Topology(StrEnum):
    RING = "ring"
    ALL_TO_ALL = "all-to-all"
    PAIRS = "pairs"


class Codec(StrEnum):
    ZSTD = "zstd"
    NONE = "none"


class WorkloadSpec(ApiModel):
    """What each worker sends, in what pieces, to whom."""

    source: Source = Source.SYNTHETIC
    profile: Profile = Profile.MIXED
    path: str = ""
    batch_bytes: int = Field(65536, ge=64, le=64 * MIB)
    topology: Topology = Topology.RING
    streams_per_peer: int = Field(1, ge=1, le=64)
    rate_limit_bytes_per_second: int = Field(0, ge=0)


class CompressionSpec(ApiModel):
    """How batches are compressed before they go on the wire."""

    codec: Codec = Codec.ZSTD
    level: int = Field(3, ge=-7, le=22)
    threads: int = Field(1, ge=0, le=64)


SYSCTL_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")


class NetworkSpec(ApiModel):
    """Socket tuning for the worker streams."""

    port: int = Field(7070, ge=1024, le=65535)
    socket_buffer_bytes: int = Field(4 * MIB, ge=0, le=256 * MIB)
    chunk_bytes: int = Field(65536, ge=4096, le=16 * MIB)
    tcp_no_delay: bool = True
    tcp_quick_ack: bool = True
    sysctls: dict[str, str] = Field(default_factory=dict)
    node_tuning: bool = False

    @field_validator("sysctls")
    @classmethod
    def _sysctl_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not SYSCTL_NAME.match(name):
                raise ValueError(f"sysctl name {name!r} is not a dotted kernel parameter name")
        return value


class CompressionClusterSpec(ApiModel):
    """The desired state of a CompressionCluster."""

    workers: int = Field(4, ge=1, le=1000)
    log_mode: LogModeField = LogMode.SILENT
    duration: str = Field("", pattern=r"^$|^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
    image: str = ""
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    compression: CompressionSpec = Field(default_factory=CompressionSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    spread_across_nodes: bool = True
    status_interval_seconds: int = Field(10, ge=1, le=3600)
    resources: dict[str, Any] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(default_factory=dict)


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration ("90s", "1m30s"); None for "" (run until deleted)."""
    if not text:
        return None
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            raise ValueError(f"duration {text!r} is not like '30s', '10m' or '1h30m'")
        total += float(match.group(1)) * _DURATION_UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise ValueError(f"duration {text!r} is not like '30s', '10m' or '1h30m'")
    return total


class SocketBufferReport(ApiModel):
    """What was asked of SO_SNDBUF/SO_RCVBUF and what the kernel granted (it doubles/caps)."""

    requested: int = 0
    effective_send: int = 0
    effective_receive: int = 0


class WorkerReport(ApiModel):
    """One worker's own entry, `status.workers.<pod name>`; the worker writes nothing else.

    Rates are over the worker's last report interval; `networkSeconds` and
    `compressionSeconds` are scaled to a 30 s window (the seed's unit).
    """

    node: str = ""
    throughput_bytes_per_second: float = 0
    wire_bytes_per_second: float = 0
    batches_per_second: float = 0
    batches: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    lost_batches: int = 0
    corrupt_batches: int = 0
    resent_batches: int = 0
    compression_ratio: float = 0
    network_seconds: float = 0
    compression_seconds: float = 0
    rss_bytes: int = 0
    socket_buffer: SocketBufferReport = Field(default_factory=SocketBufferReport)
    peers_connected: int = 0
    last_report: str = ""
