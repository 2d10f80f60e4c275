"""The worker's configuration (`W5XDE_CONFIG`): the contract between the operator, which
renders it from a cluster spec, `w5xde local`, which generates it, and the worker, which
loads it (`worker/config.py`).

The workload, compression and network parts are the API models themselves, so a
field means exactly the same thing in a CompressionCluster and in a worker.  The
cluster key never travels in this JSON: it comes from the environment or a mounted
Secret file, so a rendered config can be logged or stored in a ConfigMap.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from w5xde.api.v1alpha1 import (
    MAX_WORKERS,
    ApiModel,
    CertificateIssuer,
    CompressionClusterSpec,
    CompressionSpec,
    LogMode,
    LogModeField,
    NetworkSpec,
    WorkloadSpec,
    parse_duration,
)
from w5xde.contract.endpoints import (
    CERT_MANAGER_DIRECTORY,
    METRICS_PORT,
    TRUST_DIRECTORY,
    TRUST_FILE,
)

_ORDINAL_SUFFIX = re.compile(r"-([0-9]+)$")


class WorkerModel(ApiModel):
    """camelCase in JSON like the API, snake_case in Python, unknown fields refused: the
    API's own model base, so a config field reads as the spec field it comes from."""


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


class WorkerSettings(WorkerModel):
    """What every worker of one cluster shares: rendered once per cluster (the pod
    template's `W5XDE_CONFIG`) by `settings_for_cluster`, or by `w5xde local`."""

    cluster_id: str = Field(min_length=1, max_length=253)
    listen_host: str = "0.0.0.0"
    metrics_port: int = Field(METRICS_PORT, ge=0, le=65535)
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


class WorkerConfig(WorkerSettings):
    """Everything one worker process needs besides its key."""

    name: str = Field(min_length=1, max_length=253)
    node: str = ""
    #: Where the metrics and report server binds; empty: `listenHost` (a pod: its IP).
    metrics_host: str = ""
    #: The bounded run's one deadline (epoch seconds), as the operator publishes it once
    #: the run started (`W5XDE_RUN_DEADLINE`): a worker started later, by a scale or a
    #: restart, stops with the others.  None: the run is `durationSeconds` from start.
    run_deadline: float | None = Field(None, gt=0)

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


def tls_for_cluster(spec: CompressionClusterSpec) -> TlsConfig | None:
    """Operator-issued: the worker makes its key and asks the operator, and trusts the CA
    in its ConfigMap.  cert-manager: the CSI driver's files, reloaded when renewed."""
    if not spec.security.tls:
        return None
    if spec.security.certificates == CertificateIssuer.CERT_MANAGER:
        return TlsConfig(
            source="files",
            ca_file=f"{CERT_MANAGER_DIRECTORY}/ca.crt",
            certificate_file=f"{CERT_MANAGER_DIRECTORY}/tls.crt",
            key_file=f"{CERT_MANAGER_DIRECTORY}/tls.key",
        )
    return TlsConfig(source="operator", ca_file=f"{TRUST_DIRECTORY}/{TRUST_FILE}")


def settings_for_cluster(
    spec: CompressionClusterSpec, *, cluster_id: str, peer_pattern: str, workers: int
) -> WorkerSettings:
    """The one renderer from a cluster spec to what its workers share.  `workers` is the
    count the pod template was rendered with; later scaling reaches running workers
    through the operator's channel, not through a new template."""
    return WorkerSettings(
        cluster_id=cluster_id,
        listen_host="0.0.0.0",
        metrics_port=METRICS_PORT,
        peer_pattern=peer_pattern,
        workers=workers,
        log_mode=spec.log_mode,
        duration_seconds=parse_duration(spec.duration),
        reporting=ReportingConfig(interval_seconds=spec.status_interval_seconds),
        tls=tls_for_cluster(spec),
        workload=spec.workload,
        compression=spec.compression,
        network=spec.network,
    )
