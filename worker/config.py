"""The worker's configuration: what the operator renders and `w5xde local` generates.

The workload, compression and network parts are the API models themselves, so a
field means exactly the same thing in a CompressionCluster and in a worker.  The
cluster key never travels in this JSON: it comes from the environment or a mounted
Secret file, so a rendered config can be logged or stored in a ConfigMap.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from w5xde.api.v1alpha1 import (
    MAX_WORKERS,
    CompressionSpec,
    LogMode,
    LogModeField,
    NetworkSpec,
    WorkloadSpec,
)
from w5xde.contract.endpoints import (
    ENV_CLUSTER_KEY,
    ENV_CLUSTER_KEY_FILE,
    ENV_CONFIG,
    ENV_LOG_MODE,
    ENV_NAME,
    ENV_NODE_NAME,
    ENV_POD_IP,
    METRICS_PORT,
)

#: A key shorter than this would make the HMAC proof guessable.
MIN_KEY_BYTES = 16

_ORDINAL_SUFFIX = re.compile(r"-([0-9]+)$")


class ConfigError(ValueError):
    """Configuration the worker cannot run with; the message names the field and the rule."""


class WorkerModel(BaseModel):
    """camelCase in JSON like the API, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class ReportingConfig(WorkerModel):
    """The worker serves its report to the operator (a pod); absent for `w5xde local`.

    With it, a bounded run's worker stops streaming at the end but keeps serving its
    final report until it is terminated, so the operator folds the run's last figures.
    """

    interval_seconds: float = Field(10.0, gt=0, le=3600)


class TlsConfig(WorkerModel):
    """Mutual TLS on the data plane, and where this worker's certificate comes from.

    `operator`: the worker makes its key and a CSR, and the operator signs it through
    the report channel (pods).  `files`: certificate and key are files, reloaded when
    they change (`w5xde local`, benchmarks, cert-manager's CSI driver).  Either way the
    cluster CA is the file `caFile`.
    """

    source: Literal["operator", "files"] = "operator"
    ca_file: str = Field(min_length=1)
    certificate_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _files_are_named(self) -> TlsConfig:
        if self.source == "files" and not (self.certificate_file and self.key_file):
            raise ValueError("tls.source 'files' needs tls.certificateFile and tls.keyFile")
        return self


class WorkerConfig(WorkerModel):
    """Everything one worker process needs besides its key."""

    name: str = Field(min_length=1, max_length=253)
    cluster_id: str = Field(min_length=1, max_length=253)
    node: str = ""
    listen_host: str = "0.0.0.0"
    metrics_port: int = Field(METRICS_PORT, ge=0, le=65535)
    #: Where the metrics and report server binds; empty: `listenHost` (a pod: its IP).
    metrics_host: str = ""
    peers: list[str] = Field(default_factory=list)
    peer_pattern: str | None = None
    workers: int = Field(1, ge=1, le=MAX_WORKERS)
    log_mode: LogModeField = LogMode.SILENT
    duration_seconds: float | None = Field(None, gt=0)
    reporting: ReportingConfig | None = None
    #: None: TLS off (`spec.security.tls: false`); the key proof still guards the handshake.
    tls: TlsConfig | None = None
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    compression: CompressionSpec = Field(default_factory=CompressionSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)

    @model_validator(mode="after")
    def _peers_are_usable(self) -> WorkerConfig:
        if self.peers and self.peer_pattern:
            raise ValueError("peers and peerPattern are exclusive: give one of them")
        if self.peer_pattern is not None:
            if "{index}" not in self.peer_pattern:
                raise ValueError("peerPattern must contain '{index}'")
            try:
                first = self.peer_pattern.format(index=0)
            except (KeyError, IndexError, ValueError):
                raise ValueError("peerPattern may use only the placeholder '{index}'") from None
            split_host_port(first, field="peerPattern")
            if _ORDINAL_SUFFIX.search(self.name) is None:
                raise ValueError("name must end in '-<ordinal>' when peerPattern is used")
        for address in self.peers:
            split_host_port(address, field="peers")
        if self.peers:
            own_index(self.name, self.peers)
        return self

    def peer_list(self, workers: int | None = None) -> list[str]:
        """host:port of every worker in index order, self included, for `workers` workers."""
        if self.peer_pattern is not None:
            count = self.workers if workers is None else workers
            return [self.peer_pattern.format(index=index) for index in range(count)]
        if not self.peers:
            return [f"{self.listen_host}:{self.network.port}"]
        if workers is None:
            return list(self.peers)
        return list(self.peers[:workers])

    def index(self) -> int:
        """This worker's position in the peer list."""
        if self.peer_pattern is not None or not self.peers:
            match = _ORDINAL_SUFFIX.search(self.name)
            return int(match.group(1)) if match else 0
        return own_index(self.name, self.peers)

    def listen_port(self) -> int:
        """The port of this worker's own peer entry (local runs give each worker its own)."""
        peers = self.peer_list()
        index = self.index()
        if self.peers and index < len(peers):
            return split_host_port(peers[index], field="peers")[1]
        return self.network.port


def split_host_port(address: str, *, field: str) -> tuple[str, int]:
    """("host", port) from "host:port"; a ConfigError-worthy ValueError otherwise."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{field}: {address!r} is not 'host:port' with a port in 1..65535")
    return host.strip("[]"), int(port_text)


def own_index(name: str, peers: list[str]) -> int:
    """Where `name` sits in `peers`: by host name (or its first DNS label), else by ordinal."""
    for index, address in enumerate(peers):
        host = address.rpartition(":")[0]
        if host == name or host.split(".", 1)[0] == name:
            return index
    match = _ORDINAL_SUFFIX.search(name)
    if match and int(match.group(1)) < len(peers):
        return int(match.group(1))
    raise ValueError(
        f"name {name!r} is neither a host in peers nor ends in '-<ordinal>' below {len(peers)}"
    )


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "config"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def load_worker_config(
    env: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> WorkerConfig:
    """The config from `W5XDE_CONFIG` and/or a JSON file, with the per-pod env overrides.

    The file is read first and the env JSON merged over it, so an operator can render
    the shared part into a ConfigMap and still set something per pod.
    """
    env = os.environ if env is None else env
    data: dict[str, object] = {}
    if config_file is not None:
        try:
            text = Path(config_file).read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"--config: cannot read {config_file}: {error.strerror}") from None
        data.update(_parse_json(text, f"--config {config_file}"))
    if env.get(ENV_CONFIG):
        data.update(_parse_json(env[ENV_CONFIG], ENV_CONFIG))
    if env.get(ENV_NAME):
        data["name"] = env[ENV_NAME]
    if env.get(ENV_NODE_NAME):
        data["node"] = env[ENV_NODE_NAME]
    if env.get(ENV_LOG_MODE):
        data["logMode"] = env[ENV_LOG_MODE]
    if env.get(ENV_POD_IP) and data:
        data["metricsHost"] = env[ENV_POD_IP]
    if not data:
        raise ConfigError(f"config: give {ENV_CONFIG} (JSON) or --config FILE")
    try:
        return WorkerConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def _parse_json(text: str, origin: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{origin}: not valid JSON ({error.msg} at line {error.lineno})"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: must be a JSON object")
    return value


def load_cluster_key(env: Mapping[str, str] | None = None) -> bytes:
    """The shared cluster key from `W5XDE_CLUSTER_KEY` or the file `W5XDE_CLUSTER_KEY_FILE`."""
    env = os.environ if env is None else env
    if env.get(ENV_CLUSTER_KEY):
        key = env[ENV_CLUSTER_KEY].encode()
        origin = ENV_CLUSTER_KEY
    elif env.get(ENV_CLUSTER_KEY_FILE):
        try:
            key = Path(env[ENV_CLUSTER_KEY_FILE]).read_bytes().strip()
        except OSError as error:
            raise ConfigError(
                f"{ENV_CLUSTER_KEY_FILE}: cannot read {env[ENV_CLUSTER_KEY_FILE]}: {error.strerror}"
            ) from None
        origin = ENV_CLUSTER_KEY_FILE
    else:
        raise ConfigError(f"cluster key: set {ENV_CLUSTER_KEY} or {ENV_CLUSTER_KEY_FILE}")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{origin}: the cluster key must be at least {MIN_KEY_BYTES} bytes")
    return key
