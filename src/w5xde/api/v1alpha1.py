"""`w5xde.io/v1alpha1` CompressionCluster spec.

Field names are the CR's camelCase names (aliases); Python code uses snake_case.
Every model forbids unknown fields so a typo is an error that names the field.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    PlainValidator,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from w5xde.api.statistics import SampleStats

GROUP = "w5xde.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CompressionCluster"
PLURAL = "compressionclusters"
SINGULAR = "compressioncluster"
SHORT_NAMES = ["cc"]

MIB = 1024 * 1024
#: The largest cluster the API accepts (and the reporting path is measured at).
MAX_WORKERS = 1000


class ApiModel(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        defer_build=True,
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

#: What the API server accepts for `logMode`; the operator maps the aliases to names.
LOG_MODE_WIRE_VALUES: list[JsonValue] = [*(mode.value for mode in LogMode), *_LOG_MODE_ALIASES]


def cel_rules(*rules: tuple[str, str, str]) -> dict[str, Any]:
    """CEL `x-kubernetes-validations` for a model's schema: (rule, message, fieldPath).

    The same rule is mirrored by a pydantic validator with the same message, so the
    operator and `w5xde local` refuse exactly what the API server refuses.
    """
    return {
        "x-kubernetes-validations": [
            {"rule": rule, "message": message, **({"fieldPath": field_path} if field_path else {})}
            for rule, message, field_path in rules
        ]
    }


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
    MESH = "mesh"


class Placement(StrEnum):
    """Where the workers run, so their links take the path being measured (docs/api.md)."""

    #: Spread over nodes when the scheduler can (soft anti-affinity): the default.
    PREFERRED = "preferred"
    #: At most one worker per node (hard anti-affinity): every link crosses the network.
    REQUIRED = "required"
    #: The same as `required`, named for what it measures.
    CROSS_NODE = "crossNode"
    #: Every worker on one node (hard pod affinity): every link is node-local.
    SAME_NODE = "sameNode"
    #: One worker on each node of `placementNodes` (node affinity + hard anti-affinity).
    NODES = "nodes"
    #: Spread evenly over the values of the node label `placementTopologyKey` (zones).
    SPREAD = "spread"


#: The placements that put at most one worker on a node.
ONE_WORKER_PER_NODE = frozenset({Placement.REQUIRED, Placement.CROSS_NODE, Placement.NODES})


class NetworkPath(StrEnum):
    """How a worker reaches its peers."""

    #: Pod to pod, by the pod's IP (the headless Service's DNS names).
    POD = "pod"
    #: Through a ClusterIP Service per worker: kube-proxy's translation is in the path.
    SERVICE = "service"


class Codec(StrEnum):
    ZSTD = "zstd"
    NONE = "none"


class CompressionContext(StrEnum):
    """What a zstd frame may refer back to (docs/protocol.md, "Stream context")."""

    #: One compressor per connection keeps its history and flushes per frame; the
    #: receiver decompresses the connection's frames in order.
    STREAM = "stream"
    #: Every batch compressed on its own (protocol v2's frames; old peers speak only this).
    FRAME = "frame"


class Balance(StrEnum):
    """How a worker splits its batches among its peers (docs/tuning.md)."""

    EVEN = "even"
    CAPACITY = "capacity"


#: The value of an int-or-string field that hands the choice to the worker (docs/tuning.md).
AUTO = "auto"
MIN_LEVEL, MAX_LEVEL = -7, 22
MAX_SOCKET_BUFFER_BYTES = 256 * MIB
#: `socketBufferBytes: auto`: the largest buffer a worker grows a socket to (and the
#: tcp_rmem/tcp_wmem maximum the operator renders for it).
AUTO_BUFFER_CAP_BYTES = 32 * MIB
LEVEL_RULE = f"compression.level: must be an integer {MIN_LEVEL}..{MAX_LEVEL} or 'auto'"
SOCKET_BUFFER_RULE = (
    f"network.socketBufferBytes: must be an integer 0..{MAX_SOCKET_BUFFER_BYTES} or 'auto'"
)


def _int_or_auto(value: object, minimum: int, maximum: int, rule: str) -> int | str:
    """An int within bounds (also from a digit string, as env and CLI give it) or 'auto'."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{rule} (got {value!r})") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{rule} (got {value!r})")
    if not minimum <= value <= maximum:
        raise ValueError(f"{rule} (got {value})")
    return value


def _int_or_string_schema(description: str) -> WithJsonSchema:
    # Kubernetes' structural form of an int-or-string; the bounds are CEL rules on the parent.
    return WithJsonSchema({"x-kubernetes-int-or-string": True, "description": description})


LevelField = Annotated[
    int | str,
    PlainValidator(lambda value: _int_or_auto(value, MIN_LEVEL, MAX_LEVEL, LEVEL_RULE)),
    PlainSerializer(lambda value: value),
    _int_or_string_schema(
        "zstd level -7..22 (negative levels are the fast ones), or auto: each stream picks"
        " its level, including no compression, from the link and the CPU it measures."
    ),
]
SocketBufferField = Annotated[
    int | str,
    PlainValidator(
        lambda value: _int_or_auto(value, 0, MAX_SOCKET_BUFFER_BYTES, SOCKET_BUFFER_RULE)
    ),
    PlainSerializer(lambda value: value),
    _int_or_string_schema(
        "SO_SNDBUF/SO_RCVBUF in bytes; 0 keeps kernel autotuning; auto keeps autotuning"
        " with a floor and a cap derived from the measured rate and round-trip time."
        " Also sizes tcp_rmem/tcp_wmem on Kubernetes 1.32 and newer."
    ),
]


FILE_NEEDS_PATH = "workload.path is required when workload.source is 'file'"

#: all-to-all holds a stream to every other worker: beyond this, `mesh` (docs/scale.md).
MAX_ALL_TO_ALL_WORKERS = 64
#: Outgoing streams of one worker (peers x streamsPerPeer), whatever the topology.
MAX_STREAMS_PER_WORKER = 128
MAX_MESH_DEGREE = 64
ALL_TO_ALL_TOO_BIG = (
    f"workload.topology: all-to-all is limited to {MAX_ALL_TO_ALL_WORKERS} workers (every worker"
    " streams to every other); use topology: mesh (with workload.meshDegree) for larger clusters"
)
TOO_MANY_STREAMS = (
    f"workload.streamsPerPeer: peers per worker x streamsPerPeer must be at most"
    f" {MAX_STREAMS_PER_WORKER} streams per worker (all-to-all: workers - 1 peers,"
    " mesh: meshDegree peers, ring and pairs: 1 peer)"
)
_CEL_TOPOLOGY = "(has(self.workload.topology) ? self.workload.topology : 'ring')"
_CEL_WORKERS = "(has(self.workers) ? self.workers : 4)"
_CEL_DEGREE = "(has(self.workload.meshDegree) ? self.workload.meshDegree : 8)"
_CEL_STREAMS = "(has(self.workload.streamsPerPeer) ? self.workload.streamsPerPeer : 1)"
_CEL_PEERS = (
    f"({_CEL_TOPOLOGY} == 'all-to-all' ? {_CEL_WORKERS} - 1"
    f" : ({_CEL_TOPOLOGY} == 'mesh' ? ({_CEL_DEGREE} < {_CEL_WORKERS} ? {_CEL_DEGREE}"
    f" : {_CEL_WORKERS} - 1) : 1))"
)
#: Cross-field rules of `workload` against `workers`: they sit on the spec (CEL sees
#: only the object it is attached to) and are mirrored by `_workload_fits_workers`.
WORKLOAD_SCALE_RULES: tuple[tuple[str, str, str], ...] = (
    (
        f"!has(self.workload) || {_CEL_TOPOLOGY} != 'all-to-all'"
        f" || {_CEL_WORKERS} <= {MAX_ALL_TO_ALL_WORKERS}",
        ALL_TO_ALL_TOO_BIG,
        ".workload.topology",
    ),
    (
        f"!has(self.workload) || {_CEL_PEERS} * {_CEL_STREAMS} <= {MAX_STREAMS_PER_WORKER}",
        TOO_MANY_STREAMS,
        ".workload.streamsPerPeer",
    ),
)


def peers_per_worker(topology: Topology, workers: int, mesh_degree: int) -> int:
    """Peers one worker streams to (the API's bound; `worker/topology.py` picks which)."""
    if workers <= 1:
        return 0
    if topology == Topology.ALL_TO_ALL:
        return workers - 1
    if topology == Topology.MESH:
        return min(mesh_degree, workers - 1)
    return 1


def check_workload_scale(workload: WorkloadSpec, workers: int) -> None:
    """The pydantic side of WORKLOAD_SCALE_RULES: ValueError with the same messages."""
    if workload.topology is Topology.ALL_TO_ALL and workers > MAX_ALL_TO_ALL_WORKERS:
        raise ValueError(ALL_TO_ALL_TOO_BIG)
    peers = max(1, peers_per_worker(workload.topology, workers, workload.mesh_degree))
    if peers * workload.streams_per_peer > MAX_STREAMS_PER_WORKER:
        raise ValueError(TOO_MANY_STREAMS)


class WorkloadSpec(ApiModel):
    """What each worker sends, in what pieces, to whom."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "!has(self.source) || self.source != 'file' || (has(self.path) && self.path != '')",
                FILE_NEEDS_PATH,
                ".path",
            )
        )
    )

    source: Source = Source.SYNTHETIC
    """Where batches come from: generated data, or the files under `path`."""
    profile: Profile = Profile.MIXED
    """Kind of synthetic data; it decides how well batches compress."""
    path: str = ""
    """A file or directory inside the worker (from a volume), read in a loop.

    Required for `file`."""
    batch_bytes: int = Field(65536, ge=64, le=64 * MIB)
    """Raw bytes per batch (one frame on the wire)."""
    topology: Topology = Topology.RING
    """Who sends to whom: the next worker, every worker, a fixed partner, or `mesh`.

    `mesh` streams to meshDegree peers (an expander over the worker indices, docs/scale.md);
    all-to-all is limited to 64 workers."""
    mesh_degree: int = Field(8, ge=2, le=MAX_MESH_DEGREE)
    """Peers each worker streams to (and receives from) with topology mesh."""
    streams_per_peer: int = Field(1, ge=1, le=64)
    """Parallel TCP connections to each peer."""
    rate_limit_bytes_per_second: int = Field(0, ge=0)
    """Raw bytes per second each worker may send; 0 sends as fast as it can."""
    balance: Balance = Balance.EVEN
    """even: every peer gets the same share of a worker's batches; capacity: batches go
    to whichever peer has credit (receiver-granted), so a slow peer or link gets less."""

    @model_validator(mode="after")
    def _file_needs_path(self) -> WorkloadSpec:
        if self.source is Source.FILE and not self.path:
            raise ValueError(FILE_NEEDS_PATH)
        return self


class CompressionSpec(ApiModel):
    """How batches are compressed before they go on the wire."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "!has(self.level) || (type(self.level) == string ? self.level == 'auto'"
                f" : (self.level >= {MIN_LEVEL} && self.level <= {MAX_LEVEL}))",
                LEVEL_RULE,
                ".level",
            )
        )
    )

    codec: Codec = Codec.ZSTD
    """zstd, or none to measure the network alone."""
    level: LevelField = 3
    """zstd level -7..22, or auto (each stream picks its level, none included)."""
    threads: int = Field(1, ge=0, le=64)
    """Compression threads per worker; 0 uses one per CPU."""
    context: CompressionContext = CompressionContext.STREAM
    """stream: each connection's compressor keeps its history (better ratio, protocol v3);
    frame: every batch on its own (what protocol v2 peers speak)."""

    @property
    def auto_level(self) -> bool:
        """`level: auto`: each stream chooses its level (worker/level_policy.py)."""
        return self.codec is Codec.ZSTD and self.level == AUTO

    @property
    def fixed_level(self) -> int:
        """The zstd level to start from: the fixed one, or auto's starting level (1)."""
        return self.level if isinstance(self.level, int) else 1


SYSCTL_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_-]+)+$")

#: Prefixes of the sysctls a pod can have at all (the kernel namespaces them per pod).
NAMESPACED_SYSCTL_PREFIXES = ("net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")
#: Node-wide even though they look like `net.*`: only the node-tuning DaemonSet sets them.
NODE_WIDE_SYSCTL_PREFIX = "net.core."
MAX_SYSCTLS = 32

CHUNK_WITHIN_BUFFER = (
    "network.chunkBytes must not be larger than network.socketBufferBytes when a buffer is set"
)
SYSCTL_NOT_NAMESPACED = (
    "network.sysctls: only namespaced sysctls (net.*, kernel.shm*, kernel.msg*, kernel.sem,"
    " fs.mqueue.*) can be set for a pod"
)
SYSCTL_NODE_WIDE = (
    "network.sysctls: net.core.* is node-wide and cannot be set from a pod;"
    " use network.nodeTuning with the chart's node-tuning DaemonSet"
)
HOST_NETWORK_NO_SYSCTLS = (
    "network.sysctls: a worker on the host network shares the node's network namespace,"
    " so it cannot set net.* sysctls (they would change the node's)"
)
PATH_IMMUTABLE = (
    "network.path cannot change on a running cluster (its Services and peers depend on it):"
    " delete the cluster or create another"
)
HOST_NETWORK_NEEDS_ONE_PER_NODE = (
    "network.hostNetwork: workers on the host network bind the node's ports, so at most one"
    " may run per node: use placement crossNode (or required, or nodes)"
)
_NAMESPACED_CEL = " || ".join(f"k.startsWith('{prefix}')" for prefix in NAMESPACED_SYSCTL_PREFIXES)


class NetworkSpec(ApiModel):
    """Socket tuning for the worker streams."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                "!has(self.socketBufferBytes) || (type(self.socketBufferBytes) == string"
                " ? self.socketBufferBytes == 'auto' : (self.socketBufferBytes >= 0"
                f" && self.socketBufferBytes <= {MAX_SOCKET_BUFFER_BYTES}))",
                SOCKET_BUFFER_RULE,
                ".socketBufferBytes",
            ),
            (
                "!has(self.socketBufferBytes) || !has(self.chunkBytes)"
                " || type(self.socketBufferBytes) == string"
                " || self.socketBufferBytes == 0 || self.chunkBytes <= self.socketBufferBytes",
                CHUNK_WITHIN_BUFFER,
                ".chunkBytes",
            ),
            (
                f"!has(self.sysctls) || self.sysctls.all(k, {_NAMESPACED_CEL})",
                SYSCTL_NOT_NAMESPACED,
                ".sysctls",
            ),
            (
                "!has(self.sysctls) || "
                f"self.sysctls.all(k, !k.startsWith('{NODE_WIDE_SYSCTL_PREFIX}'))",
                SYSCTL_NODE_WIDE,
                ".sysctls",
            ),
            (
                "!has(self.hostNetwork) || !self.hostNetwork || !has(self.sysctls)"
                " || size(self.sysctls) == 0",
                HOST_NETWORK_NO_SYSCTLS,
                ".sysctls",
            ),
            (
                "!has(oldSelf.path) || !has(self.path) || self.path == oldSelf.path",
                PATH_IMMUTABLE,
                ".path",
            ),
        )
    )

    port: int = Field(7070, ge=1024, le=65535)
    """TCP port of the data streams."""
    socket_buffer_bytes: SocketBufferField = 4 * MIB
    """SO_SNDBUF/SO_RCVBUF; 0 keeps kernel autotuning; auto: autotuning with a floor and cap.

    Also sizes tcp_rmem/tcp_wmem on Kubernetes 1.32 and newer."""
    chunk_bytes: int = Field(65536, ge=4096, le=16 * MIB)
    """Receive chunk for recv_into; at most socketBufferBytes when that is set."""
    tcp_no_delay: bool = True
    """TCP_NODELAY on every stream."""
    tcp_quick_ack: bool = True
    """TCP_QUICKACK, re-armed after every receive (the kernel resets it)."""
    sysctls: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": MAX_SYSCTLS}
    )
    """Extra namespaced sysctls for the worker pods; unsafe ones make the cluster Degraded."""
    node_tuning: bool = False
    """Run only on nodes the chart's node-tuning DaemonSet has tuned.

    Those carry the label w5xde.io/node-tuned=true."""
    path: NetworkPath = NetworkPath.POD
    """pod: workers dial each other's pod IPs; service: each dials the peer's own ClusterIP
    Service (named as the pod, NAME-INDEX), so kube-proxy's translation is in every link.

    Immutable."""
    host_network: bool = False
    """Workers use the node's network namespace (no pod network in the path). Needs a
    namespace whose PodSecurity level allows host namespaces (privileged), one worker per
    node (placement crossNode, required or nodes), and no sysctls (they would be the node's)."""

    @field_validator("sysctls")
    @classmethod
    def _sysctl_names(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_SYSCTLS:
            raise ValueError(f"at most {MAX_SYSCTLS} sysctls")
        for name in value:
            if not SYSCTL_NAME.match(name):
                raise ValueError(f"sysctl name {name!r} is not a dotted kernel parameter name")
            if not name.startswith(NAMESPACED_SYSCTL_PREFIXES):
                raise ValueError(f"{SYSCTL_NOT_NAMESPACED} (got {name!r})")
            if name.startswith(NODE_WIDE_SYSCTL_PREFIX):
                raise ValueError(f"{SYSCTL_NODE_WIDE} (got {name!r})")
        return value

    @model_validator(mode="after")
    def _chunk_within_buffer(self) -> NetworkSpec:
        fixed = self.fixed_buffer_bytes
        if fixed and self.chunk_bytes > fixed:
            raise ValueError(CHUNK_WITHIN_BUFFER)
        if self.host_network and self.sysctls:
            raise ValueError(HOST_NETWORK_NO_SYSCTLS)
        return self

    @property
    def auto_buffers(self) -> bool:
        """`socketBufferBytes: auto`: autotuning kept, with a floor and a cap (sockets.py)."""
        return self.socket_buffer_bytes == AUTO

    @property
    def fixed_buffer_bytes(self) -> int:
        """The fixed SO_SNDBUF/SO_RCVBUF to set, or 0 (autotuning, plain or auto)."""
        value = self.socket_buffer_bytes
        return value if isinstance(value, int) else 0


class LocalObjectReference(ApiModel):
    """An object in the same namespace, by name."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the object."""


#: Volume sources a CompressionCluster may give its workers: never hostPath (or any
#: other node-level source), so creating a cluster is not creating arbitrary pods.
ALLOWED_VOLUME_SOURCES = ("configMap", "secret", "persistentVolumeClaim", "emptyDir", "projected")
ONE_VOLUME_SOURCE = (
    "volumes: each volume names exactly one source of "
    + ", ".join(ALLOWED_VOLUME_SOURCES)
    + " (hostPath and other node sources are not allowed)"
)
_SOURCE_PRESENT_CEL = ", ".join(f"has(self.{key})" for key in ALLOWED_VOLUME_SOURCES)
VolumeSourceBody = Annotated[
    dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
]


class Volume(ApiModel):
    """A pod volume from the allowed sources; its body is passed to the pod unchanged."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (f"[{_SOURCE_PRESENT_CEL}].filter(x, x).size() == 1", ONE_VOLUME_SOURCE, "")
        )
    )

    name: str = Field(min_length=1, max_length=63)
    config_map: VolumeSourceBody | None = None
    secret: VolumeSourceBody | None = None
    persistent_volume_claim: VolumeSourceBody | None = None
    empty_dir: VolumeSourceBody | None = None
    projected: VolumeSourceBody | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        present = [
            self.config_map,
            self.secret,
            self.persistent_volume_claim,
            self.empty_dir,
            self.projected,
        ]
        if sum(source is not None for source in present) != 1:
            raise ValueError(ONE_VOLUME_SOURCE)
        return self

    def pod_volume(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class CertificateIssuer(StrEnum):
    OPERATOR = "operator"
    CERT_MANAGER = "certManager"


class IssuerReference(ApiModel):
    """A cert-manager Issuer or ClusterIssuer."""

    name: str = Field(min_length=1, max_length=253)
    kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"
    group: str = Field("cert-manager.io", min_length=1, max_length=253)


CERT_MANAGER_NEEDS_ISSUER = "security.issuerRef is required when certificates is certManager"


class SecuritySpec(ApiModel):
    """How the data plane is protected."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            (
                # `has` first: the API server checks the rule against `default: {}` too.
                "!has(self.certificates) || self.certificates != 'certManager'"
                " || has(self.issuerRef)",
                CERT_MANAGER_NEEDS_ISSUER,
                ".issuerRef",
            )
        )
    )

    tls: bool = True
    """Mutual TLS 1.3 between workers, each with its own certificate from the cluster's CA
    (kept by the operator). `false` leaves only the key proof at connect, and the
    cluster Degraded with reason `TLSDisabled`."""
    certificates: CertificateIssuer = CertificateIssuer.OPERATOR
    """Who issues each worker's certificate: `operator` (a CA per cluster, kept by the
    operator) or `certManager` (cert-manager's CSI driver, `csi.cert-manager.io`, must
    run in the cluster; each pod gets a certificate for its own name from `issuerRef`)."""
    issuer_ref: IssuerReference | None = None
    """The cert-manager issuer, for `certificates: certManager`."""

    @property
    def operator_issued(self) -> bool:
        """TLS on, with the operator's CA (not cert-manager's)."""
        return self.tls and self.certificates == CertificateIssuer.OPERATOR

    @model_validator(mode="after")
    def _issuer_for_cert_manager(self) -> SecuritySpec:
        if self.certificates == CertificateIssuer.CERT_MANAGER and self.issuer_ref is None:
            raise ValueError(CERT_MANAGER_NEEDS_ISSUER)
        return self


#: The most samples (runs back to back) `w5xde local --samples` makes.
MAX_SAMPLES = 20
EXPECT_NEEDS_DURATION = (
    "expect: expectations are checked when a run ends; set spec.duration (a bounded run)"
)
RATIO_WITHOUT_CODEC = (
    "expect.minCompressionRatio: with compression.codec none the ratio is 1, "
    "so a minimum above 1 can never pass"
)
EXPECT_RULES: tuple[tuple[str, str, str], ...] = (
    (
        "!has(self.expect) || (has(self.duration) && self.duration != '')"
        " || ((!has(self.expect.minThroughputBytesPerSecond)"
        " || self.expect.minThroughputBytesPerSecond == 0.0)"
        " && (!has(self.expect.minCompressionRatio) || self.expect.minCompressionRatio == 0.0)"
        " && (!has(self.expect.maxCpuSecondsPerGb) || self.expect.maxCpuSecondsPerGb == 0.0))",
        EXPECT_NEEDS_DURATION,
        ".expect",
    ),
    (
        "!has(self.expect) || !has(self.expect.minCompressionRatio)"
        " || self.expect.minCompressionRatio <= 1.0"
        " || !has(self.compression) || !has(self.compression.codec)"
        " || self.compression.codec != 'none'",
        RATIO_WITHOUT_CODEC,
        ".expect.minCompressionRatio",
    ),
)


SAMPLES_NEED_DURATION = "samples: more than one sample repeats a bounded run; set spec.duration"
#: `samples` > 1 needs a bounded run (mirrored by `check_samples`).
SAMPLES_RULES: tuple[tuple[str, str, str], ...] = (
    (
        "!has(self.samples) || self.samples <= 1 || (has(self.duration) && self.duration != '')",
        SAMPLES_NEED_DURATION,
        ".samples",
    ),
)


MAX_PLACEMENT_NODES = 100
NODES_NEED_LIST = "placementNodes: give the node names exactly when placement is 'nodes'"
_CEL_PLACEMENT = "(has(self.placement) ? self.placement : 'preferred')"
#: Placement rules across fields (mirrored by `check_placement`).
PLACEMENT_RULES: tuple[tuple[str, str, str], ...] = (
    (
        f"({_CEL_PLACEMENT} == 'nodes')"
        " == (has(self.placementNodes) && size(self.placementNodes) > 0)",
        NODES_NEED_LIST,
        ".placementNodes",
    ),
    (
        "!has(self.network) || !has(self.network.hostNetwork) || !self.network.hostNetwork"
        f" || {_CEL_PLACEMENT} in ["
        + ", ".join(f"'{item.value}'" for item in sorted(ONE_WORKER_PER_NODE))
        + "]",
        HOST_NETWORK_NEEDS_ONE_PER_NODE,
        ".network.hostNetwork",
    ),
)


class ExpectSpec(ApiModel):
    """What a bounded run must reach to pass; checked when it ends (docs/results.md).

    A 0 minimum or CPU maximum is no expectation; `maxLostBatches` always holds."""

    min_throughput_bytes_per_second: float = Field(0, ge=0)
    """The cluster's raw throughput over the run, at least (bytes/s; 0 = none)."""
    min_compression_ratio: float = Field(0, ge=0, le=1000)
    """Raw over wire bytes, at least (0 = none)."""
    max_lost_batches: int = Field(0, ge=0)
    """Batches lost in the run, at most (default 0: a run that loses data fails)."""
    max_cpu_seconds_per_gb: float = Field(0, ge=0)
    """Process CPU seconds per GB (1e9 bytes) of raw data received, at most (0 = none)."""

    def is_set(self) -> bool:
        """Any expectation beyond the default `maxLostBatches: 0`."""
        return self != ExpectSpec()


def check_expectations(spec: CompressionClusterSpec) -> None:
    """The pydantic side of EXPECT_RULES: ValueError with the same messages."""
    expect = spec.expect
    bounded = spec.duration != ""
    ranged = (
        expect.min_throughput_bytes_per_second,
        expect.min_compression_ratio,
        expect.max_cpu_seconds_per_gb,
    )
    if not bounded and any(value != 0 for value in ranged):
        raise ValueError(EXPECT_NEEDS_DURATION)
    if expect.min_compression_ratio > 1 and spec.compression.codec is Codec.NONE:
        raise ValueError(RATIO_WITHOUT_CODEC)


def check_samples(spec: CompressionClusterSpec) -> None:
    """The pydantic side of SAMPLES_RULES: ValueError with the same message."""
    if spec.samples > 1 and spec.duration == "":
        raise ValueError(SAMPLES_NEED_DURATION)


def check_placement(spec: CompressionClusterSpec) -> None:
    """The pydantic side of PLACEMENT_RULES: ValueError with the same messages."""
    if (spec.placement is Placement.NODES) != bool(spec.placement_nodes):
        raise ValueError(NODES_NEED_LIST)
    if spec.network.host_network and spec.placement not in ONE_WORKER_PER_NODE:
        raise ValueError(HOST_NETWORK_NEEDS_ONE_PER_NODE)


class CompressionClusterSpec(ApiModel):
    """The desired state of a CompressionCluster."""

    workers: int = Field(4, ge=1, le=MAX_WORKERS)
    """Number of worker pods; `kubectl scale cc NAME --replicas N` sets it."""
    log_mode: LogModeField = Field(
        LogMode.SILENT, json_schema_extra={"enum": LOG_MODE_WIRE_VALUES, "type": "string"}
    )
    """silent (errors) | normal (warnings) | verbose (info); "1" | "2" | "3" are aliases."""
    duration: str = Field("", pattern=r"^$|^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
    """Empty runs until deleted; "30s", "10m" is a bounded run that ends in phase Completed."""
    samples: int = Field(1, ge=1, le=MAX_SAMPLES)
    """How many times a bounded run is made back to back, each with fresh workers and its
    own run id; `status.samples` summarises them (mean, 95 % CI). More than 1 needs
    `duration`."""
    image: str = ""
    """Worker image; empty uses the one the operator was installed with."""
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    """What each worker sends."""
    compression: CompressionSpec = Field(default_factory=CompressionSpec)
    """How batches are compressed."""
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    """Socket and sysctl tuning."""
    security: SecuritySpec = Field(default_factory=SecuritySpec)
    """Transport security of the data plane."""
    spread_across_nodes: bool = True
    """Prefer one worker per node (preferred pod anti-affinity)."""
    placement: Placement = Placement.PREFERRED
    """preferred | required | crossNode | sameNode | nodes | spread. `crossNode` (or
    `required`): at most one worker per node, so no link is loopback; `sameNode`: all on
    one node, every link node-local; `nodes`: one worker on each of `placementNodes`;
    `spread`: evenly over `placementTopologyKey`. Workers the scheduler cannot place stay
    Pending and the cluster Degraded with the scheduler's words."""
    placement_nodes: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list, max_length=MAX_PLACEMENT_NODES
    )
    """Node names for `placement: nodes` (e.g. a node pair: [a, b])."""
    placement_topology_key: str = Field("topology.kubernetes.io/zone", min_length=1, max_length=316)
    """The node label `placement: spread` spreads over."""
    status_interval_seconds: int = Field(10, ge=1, le=3600)
    """How often the operator pulls each worker's report and folds the status."""
    resources: dict[str, Any] = Field(default_factory=dict)
    """Resource requests and limits of the worker container."""
    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node selector of the worker pods."""
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    """Tolerations of the worker pods."""
    affinity: dict[str, Any] = Field(default_factory=dict)
    """Affinity of the worker pods; its podAntiAffinity replaces the spreading."""
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    """Extra annotations of the worker pods."""
    volumes: list[Volume] = Field(default_factory=list, max_length=64)
    """Volumes of the worker pods, e.g. the files of a `file` source."""
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, max_length=64)
    """Where the volumes are mounted in the worker container."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    """Secrets (in the cluster's namespace) to pull a private worker image with."""
    expect: ExpectSpec = Field(default_factory=ExpectSpec)
    """Expectations a bounded run must meet: the `Passed` condition and an Event when it
    ends, and `kubectl w5xde results --check` exits 3 on a miss."""

    # The workload's scale rules need `workers`, so CEL checks them here (WorkloadSpec).
    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            *WORKLOAD_SCALE_RULES, *EXPECT_RULES, *SAMPLES_RULES, *PLACEMENT_RULES
        )
    )

    @model_validator(mode="after")
    def _workload_fits_workers(self) -> CompressionClusterSpec:
        check_workload_scale(self.workload, self.workers)
        check_expectations(self)
        check_samples(self)
        check_placement(self)
        return self


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


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    #: A bounded run's deadline passed: the workers finish and their final reports come in.
    COMPLETING = "Completing"
    COMPLETED = "Completed"
    FAILED = "Failed"


class ConditionType(StrEnum):
    """The types this operator sets; the schema keeps the set open, as metav1.Condition."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    COMPLETE = "Complete"
    FAILED = "Failed"
    #: Links whose sender reports them `Stalled`, `Unreachable` or `Refused` (with counts).
    LINKS_STALLED = "LinksStalled"
    #: The last bounded run met `spec.expect` (False names each missed expectation).
    PASSED = "Passed"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


#: metav1.Condition's own rules for `type` and `reason`.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_MESSAGE_MAX = 32768


class Condition(ApiModel):
    """A metav1.Condition; `observedGeneration` keeps `kubectl wait` honest."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE_PATTERN)
    status: ConditionStatus
    reason: str = Field(min_length=1, max_length=1024, pattern=CONDITION_REASON_PATTERN)
    message: str = Field("", max_length=CONDITION_MESSAGE_MAX)
    last_transition_time: str = Field("", json_schema_extra={"format": "date-time"})
    observed_generation: int = Field(0, ge=0)


class Totals(ApiModel):
    """Counters summed over the workers' reports since they started."""

    batches: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0
    lost_batches: int = 0
    corrupt_batches: int = 0
    resent_batches: int = 0


class Spread(ApiModel):
    """How throughput is spread across the workers (or, in `status.links`, the links)."""

    min_bytes_per_second: float = 0
    p50_bytes_per_second: float = 0
    max_bytes_per_second: float = 0


class NotableReason(StrEnum):
    """Why a worker is named in `status.notableWorkers`."""

    UNREACHABLE = "Unreachable"
    BAD_REPORT = "BadReport"
    STALE = "Stale"
    #: Its container restarted within the last few intervals (`message`: count, exit).
    RESTARTED = "Restarted"
    SLOWEST = "Slowest"


#: `status.notableWorkers` never holds more entries than this, whatever the worker count.
MAX_NOTABLE_WORKERS = 10


class NotableWorker(ApiModel):
    """A worker worth a look: failing, stale, or among the slowest."""

    name: str
    node: str = ""
    throughput_bytes_per_second: float = 0
    reason: NotableReason
    message: str = Field("", max_length=256)


class LinkState(StrEnum):
    """Whether a link carries traffic, as its sender sees it (docs/operator.md).

    `Stalled`: connected, data outstanding, and no acknowledgement progress for longer
    than the stall deadline; `Unreachable`: no connection could be made (connect failed
    or timed out); `Refused`: the peer refused the handshake.  A stream in any of these
    states keeps retrying in the background; its share goes to the streams that flow.
    """

    FLOWING = "Flowing"
    CONNECTING = "Connecting"
    STALLED = "Stalled"
    UNREACHABLE = "Unreachable"
    REFUSED = "Refused"


#: The link states that name a problem (a link in one of them is notable, and counted).
PROBLEM_LINK_STATES = frozenset({LinkState.STALLED, LinkState.UNREACHABLE, LinkState.REFUSED})


class NotableLinkReason(StrEnum):
    """Why a link is named in `status.links.notable`."""

    STALLED = "Stalled"
    UNREACHABLE = "Unreachable"
    REFUSED = "Refused"
    LOSSY = "Lossy"
    SLOWEST = "Slowest"
    HIGHEST_RTT = "HighestRtt"
    SHARED_NODE = "SharedNode"


#: `status.links.notable` never holds more entries than this, whatever the link count.
MAX_NOTABLE_LINKS = 10


class NotableLink(ApiModel):
    """One sender -> receiver link worth a look, with its figures of the last interval."""

    sender: str
    receiver: str
    sender_node: str = ""
    receiver_node: str = ""
    #: Both ends run on one node: the link never leaves the machine (loopback speed).
    shared_node: bool = False
    raw_bytes_per_second: float = 0
    wire_bytes_per_second: float = 0
    batches_per_second: float = 0
    lost_batches: int = 0
    resent_batches: int = 0
    rtt_p50_seconds: float = 0
    rtt_p99_seconds: float = 0
    reason: NotableLinkReason
    #: For `Stalled`, `Unreachable` and `Refused`: how long, and the sender's words.
    state_seconds: float = 0
    message: str = Field("", max_length=256)
    #: The kernel's TCP_INFO of the link's sockets (the worker report's `tcp*` fields).
    tcp_retransmitted_segments: int = 0
    tcp_srtt_seconds: float = 0


class SecondsSpread(ApiModel):
    """How a time figure is spread across links."""

    min_seconds: float = 0
    p50_seconds: float = 0
    max_seconds: float = 0


class LinksStatus(ApiModel):
    """The sender -> receiver links of the last fold, summarised: counts, spreads, and at
    most `MAX_NOTABLE_LINKS` named links (the full table: `kubectl w5xde status --workers`)."""

    #: Links in the workers' last reports (one per sender and receiving peer).
    links: int = 0
    #: Of those, links whose two ends run on one node.
    sharing_node: int = 0
    #: Links whose sender reports them `Stalled`, `Unreachable` or `Refused`.
    stalled: int = 0
    unreachable: int = 0
    refused: int = 0
    #: Raw bytes/s per link (acknowledged by the receiver).
    spread: Spread = Field(default_factory=Spread)
    #: Each link's ACK round-trip p99, spread across links.
    rtt_p99: SecondsSpread = Field(default_factory=SecondsSpread)
    notable: list[NotableLink] = Field(default_factory=list, max_length=MAX_NOTABLE_LINKS)


class Interval(ApiModel):
    """A figure over a run's intervals: mean, 95 % confidence half-width (Student's t)."""

    mean: float = 0
    ci95: float = 0
    min: float = 0
    max: float = 0
    samples: int = 0


class RunOutcome(StrEnum):
    COMPLETED = "Completed"  # a bounded run reached its duration
    SPEC_CHANGED = "SpecChanged"  # the spec changed, so a new run began
    FAILED = "Failed"


#: `status.runs` keeps this many finished runs, newest last.
MAX_KEPT_RUNS = 10
#: A run records at most this many scales (the first ones; later ones are counted).
MAX_RUN_SCALES = 16


class SoftwareVersions(ApiModel):
    """What a run's workers ran, as the first worker to report it says (the workers are
    gone when a finished run is read, so the run keeps it)."""

    # A worker newer than the operator may report more; the rest is still kept.
    model_config = ConfigDict(extra="ignore")

    w5xde: str = Field("", alias="w5xde", max_length=64)
    zstandard: str = Field("", max_length=64)
    libzstd: str = Field("", max_length=64)
    openssl: str = Field("", max_length=128)
    python: str = Field("", max_length=64)
    kernel: str = Field("", max_length=128)


class RunScale(ApiModel):
    """A scale within a run: from when the new worker count applied (docs/operator.md)."""

    at: str
    workers: int = Field(ge=0)


class _OmitsNoScales(ApiModel):
    """Leaves `scales` out of a dump while a run has none (and was not cleared on purpose),
    so a run that never scaled reads as it did before scales were recorded; likewise the
    sample fields of a run that is no sample set, and versions no worker reported.

    `status.run` is written with a JSON merge patch, where a key left out keeps its
    stored value: there those fields are written as null, which deletes them, so a new
    run never inherits the previous run's versions or sample state.
    """

    #: Written inside a merge patch (`status.run`), not as part of a replaced list.
    _merge_patched: ClassVar[bool] = False

    scales: list[RunScale] = Field(default_factory=list, max_length=MAX_RUN_SCALES)

    @model_serializer(mode="wrap")
    def _omit_no_scales(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if not isinstance(data, dict):
            return data
        if not self.scales and "scales" not in self.model_fields_set:
            data.pop("scales", None)
        absent = []
        if data.get("versions", "") is None:
            absent.append("versions")  # no worker reported them (or a run kept before)
        if getattr(self, "samples", 1) == 1:
            # A run that is no sample set reads as before sets existed.
            absent += [key for key in ("sample", "samples", "awaitingFreshWorkers",
                                       "awaiting_fresh_workers") if key in data]  # fmt: skip
        for key in absent:
            if self._merge_patched:
                data[key] = None
            else:
                data.pop(key, None)
        return data


class RunState(_OmitsNoScales):
    """The run in progress: what it is measured against, and its samples so far."""

    _merge_patched: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_absent(cls, data: Any) -> Any:
        """The nulls this model writes to delete a stored key read as absent."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    id: str = ""
    generation: int = 0
    #: A short digest of the spec the run measures: two runs compare only if equal.
    spec_digest: str = ""
    started_at: str | None = None
    completed_at: str | None = None
    # `scales` (from the base): the scales within the run, in order; a bounded run keeps
    # its one deadline, `startedAt` + `duration`, through them (docs/operator.md).
    #: The most workers and nodes that reported in this run.
    workers: int = 0
    nodes: int = 0
    #: The most links, and links sharing a node, reported in this run.
    links: int = 0
    links_sharing_node: int = 0
    #: `totals` when the run began: the run's own counters are `totals` minus these.
    start_totals: Totals = Field(default_factory=Totals)
    #: The software versions the run's workers report (None until one did).
    versions: SoftwareVersions | None = None
    throughput_samples: SampleStats = Field(default_factory=SampleStats)
    batches_per_second_samples: SampleStats = Field(default_factory=SampleStats)
    cpu_seconds_per_gb_samples: SampleStats = Field(default_factory=SampleStats)
    #: Which sample of `spec.samples` this run is (1-based), and of how many.
    sample: int = Field(1, ge=1)
    samples: int = Field(1, ge=1)
    #: A further sample waits for the previous sample's workers to go (a worker whose
    #: bounded run ended only serves its final report): the operator keeps the
    #: StatefulSet at zero until no worker pod is left, then starts fresh ones.
    awaiting_fresh_workers: bool = False


class ExpectationCheck(ApiModel):
    """One expectation of `spec.expect` and the run's figure it was held against."""

    expectation: str = Field(max_length=64)
    expected: float
    actual: float
    passed: bool


#: How many checks a run carries (one per `spec.expect` key).
MAX_EXPECTATIONS = 8


class RunSummary(_OmitsNoScales):
    """One finished run's own figures, kept in `status.runs`."""

    id: str
    generation: int = 0
    spec_digest: str = ""
    outcome: RunOutcome
    started_at: str | None = None
    completed_at: str | None = None
    #: Seconds traffic was meant to flow: from `startedAt` to the deadline (or the end).
    seconds: float = 0
    workers: int = 0
    nodes: int = 0
    #: Links in the run, and how many of them had both ends on one node (their
    #: figures are loopback figures, not the network's).
    links: int = 0
    links_sharing_node: int = 0
    #: The software versions the run's workers reported (None: none did).
    versions: SoftwareVersions | None = None
    throughput_bytes_per_second: float = 0
    wire_bytes_per_second: float = 0
    batches_per_second: float = 0
    compression_ratio: float = 0
    totals: Totals = Field(default_factory=Totals)
    spread: Spread = Field(default_factory=Spread)
    #: Cluster throughput (bytes/s) and batches/s over the run's report intervals.
    throughput: Interval = Field(default_factory=Interval)
    batches: Interval = Field(default_factory=Interval)
    #: Process CPU seconds per GB of raw data received, over the run's report intervals.
    cpu_seconds_per_gb: Interval = Field(default_factory=Interval)
    #: `spec.expect` held against the run's figures when it ended, and the verdict
    #: (absent for a run that did not complete).
    expectations: list[ExpectationCheck] = Field(default_factory=list, max_length=MAX_EXPECTATIONS)
    passed: bool | None = None
    #: Which sample of its sample set the run was, and of how many.
    sample: int = Field(1, ge=1)
    samples: int = Field(1, ge=1)


class SampleFigureStats(ApiModel):
    """Running statistics (Welford) of each figure over a sample set's Complete samples:
    what the next sample adds to, so a set of any length survives an operator restart.
    The names are the figures' result keys (`contract.results.sample_values`)."""

    throughput_bytes_per_second: SampleStats = Field(default_factory=SampleStats)
    wire_bytes_per_second: SampleStats = Field(default_factory=SampleStats)
    batches_per_second: SampleStats = Field(default_factory=SampleStats)
    compression_ratio: SampleStats = Field(default_factory=SampleStats)
    cpu_seconds_per_gb: SampleStats = Field(default_factory=SampleStats)
    lost_batches: SampleStats = Field(default_factory=SampleStats)


class SampleFigureSummary(ApiModel):
    """Each figure over the Complete samples: mean, 95 % CI half-width (Student's t), min,
    max and how many samples (`contract.results.figure_summaries`, as `w5xde local`)."""

    throughput_bytes_per_second: Interval = Field(default_factory=Interval)
    wire_bytes_per_second: Interval = Field(default_factory=Interval)
    batches_per_second: Interval = Field(default_factory=Interval)
    compression_ratio: Interval = Field(default_factory=Interval)
    cpu_seconds_per_gb: Interval = Field(default_factory=Interval)
    lost_batches: Interval = Field(default_factory=Interval)


class SampleSetStatus(ApiModel):
    """The sample set of `spec.samples` > 1: how far it is, its verdict and its summary."""

    #: The run id of the set's first sample.
    id: str = ""
    #: Samples wanted (`spec.samples`) and completed so far.
    samples: int = Field(1, ge=1)
    completed: int = Field(0, ge=0)
    #: The completed samples' run ids, and those that missed `spec.expect`.
    run_ids: list[str] = Field(default_factory=list, max_length=MAX_SAMPLES)
    missed: list[str] = Field(default_factory=list, max_length=MAX_SAMPLES)
    #: True when every sample passed; set once the last sample is judged.
    passed: bool | None = None
    summary: SampleFigureSummary = Field(default_factory=SampleFigureSummary)
    stats: SampleFigureStats = Field(default_factory=SampleFigureStats)


class ReportingStatus(ApiModel):
    """The last fold of worker reports: when, how many answered, how old the oldest was."""

    folded_at: str = ""
    workers_reporting: int = 0
    workers_failing: int = 0
    #: The oldest report in the fold: `kubectl get` figures are at most this old.
    oldest_report_at: str = ""


class CompressionClusterStatus(ApiModel):
    """What the operator folds from the workers' reports, and what `kubectl get` shows."""

    observed_generation: int = 0
    phase: Phase = Phase.PENDING
    ready: str = ""
    ready_workers: int = 0
    #: The worker pods' label selector, for the scale subresource (HPA, `kubectl get
    #: --subresource=scale`).
    selector: str = ""
    throughput: str = ""
    throughput_bytes_per_second: float = 0
    wire_bytes_per_second: float = 0
    batches_per_second: float = 0
    compression_ratio: float = 0
    network_seconds: float = 0
    compression_seconds: float = 0
    #: Process CPU seconds per GB (1e9 bytes) of raw data received, over the workers'
    #: last rate windows, and of it the codec's and TLS's (docs/results.md, "CPU cost").
    cpu_seconds_per_gb: float = 0
    compression_cpu_seconds_per_gb: float = 0
    tls_cpu_seconds_per_gb: float = 0
    memory_bytes: int = 0
    #: Container restarts of the current worker pods (their `containerStatuses`).
    restart_count: int = 0
    totals: Totals = Field(default_factory=Totals)
    #: Counters of worker runs that ended (pods gone, containers restarted): `totals`
    #: is these plus the live runs', so it never goes backwards and no loss is forgotten.
    #: Per-worker figures are not kept here (they would grow with the worker count):
    #: they live in the workers' report endpoints and metrics.
    retired_totals: Totals = Field(default_factory=Totals)
    spread: Spread = Field(default_factory=Spread)
    notable_workers: list[NotableWorker] = Field(
        default_factory=list, max_length=MAX_NOTABLE_WORKERS
    )
    reporting: ReportingStatus = Field(default_factory=ReportingStatus)
    #: Per-link figures, bounded (counts, spreads, at most 10 notable links).
    links: LinksStatus = Field(default_factory=LinksStatus)
    run: RunState = Field(default_factory=RunState)
    runs: list[RunSummary] = Field(default_factory=list, max_length=MAX_KEPT_RUNS)
    #: The sample set when `spec.samples` > 1 (absent otherwise).
    samples: SampleSetStatus | None = None
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    started_at: str | None = None
    completed_at: str | None = None


def status_patch(status: CompressionClusterStatus) -> dict[str, Any]:
    """The JSON merge patch that writes the fields set on `status`, and only those.

    Top-level fields not set are left out (`exclude_unset`); a field that is set is
    written whole, nested defaults included, so a merge patch leaves nothing stale.
    """
    whole = status.model_dump(mode="json", by_alias=True)
    fields = CompressionClusterStatus.model_fields
    return {
        (fields[name].alias or name): whole[fields[name].alias or name]
        for name in fields
        if name in status.model_fields_set
    }


def parse_status(raw: Any) -> CompressionClusterStatus:
    """A stored status, read tolerantly: fields this version does not know are ignored,
    and a status it cannot read at all (hand-edited, or from a newer operator) keeps
    only what identifies the run."""
    if not raw or not isinstance(raw, dict):
        return CompressionClusterStatus()
    fields = CompressionClusterStatus.model_fields
    known = set(fields) | {info.alias for info in fields.values() if info.alias}
    data = {key: value for key, value in raw.items() if key in known}
    try:
        return CompressionClusterStatus.model_validate(data)
    except ValueError:
        keep = {key: data[key] for key in ("observedGeneration", "startedAt") if key in data}
        try:
            return CompressionClusterStatus.model_validate(keep)
        except ValueError:
            return CompressionClusterStatus()


def status_path(field: str) -> str:
    """The JSONPath of a status field, from its alias (for printer columns)."""
    info = CompressionClusterStatus.model_fields[field]
    return f".status.{info.alias or field}"
