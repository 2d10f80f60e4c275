"""`kubectl w5xde run NAME [flags]`: a CompressionCluster from flags, like `kubectl run`.

The flags map one to one onto spec fields (`RUN_FLAGS`); `--set path=value` reaches
any other.  The spec is validated with the API's own models before anything is sent,
so a bad value is refused naming the flag (not pydantic's path), exit 2.
`--dry-run=client` prints the manifest, `--dry-run=server` asks the API server (CEL
rules and defaults included) without creating.  `--wait` follows the run and prints
its result; `--rm` deletes the cluster afterwards, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from w5xde.api.v1alpha1 import (
    API_VERSION,
    KIND,
    Codec,
    CompressionClusterSpec,
    NetworkPath,
    Placement,
    Profile,
    Source,
    Topology,
    parse_duration,
    parse_status,
)
from w5xde.plugin import kubectl_flags
from w5xde.plugin.kubectl_flags import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from w5xde.plugin.source import PluginError
from w5xde.plugin.views import samples_line


@dataclass(frozen=True)
class RunFlag:
    """One `run` flag: the spec field it sets (dotted camelCase path) and how to parse it."""

    flag: str
    path: str
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None


def _names(enum: Any) -> tuple[str, ...]:
    return tuple(str(member.value) for member in enum)


def _int_or_auto(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _node_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


#: Each flag and its spec field; defaults are the API's (shown by `--help`).
RUN_FLAGS: tuple[RunFlag, ...] = (
    RunFlag("--workers", "workers", "worker pods, 1..1000 (default 4)", int),
    RunFlag("--duration", "duration", "bounded run, e.g. 30s, 10m (needed by --wait)"),
    RunFlag(
        "--samples", "samples", "repeat the bounded run, 1..20, fresh workers each (default 1)", int
    ),
    RunFlag("--image", "image", "worker image (default: the operator's)"),
    RunFlag("--source", "workload.source", "batch source", choices=_names(Source)),
    RunFlag("--profile", "workload.profile", "synthetic data kind", choices=_names(Profile)),
    RunFlag("--file-path", "workload.path", "file source: a file or directory in the worker"),
    RunFlag("--batch-bytes", "workload.batchBytes", "raw bytes per batch, 64..64Mi", int),
    RunFlag("--topology", "workload.topology", "who streams to whom", choices=_names(Topology)),
    RunFlag("--streams-per-peer", "workload.streamsPerPeer", "TCP streams per peer", int),
    RunFlag(
        "--rate-limit", "workload.rateLimitBytesPerSecond", "raw bytes/s per worker (0: none)", int
    ),
    RunFlag("--codec", "compression.codec", "codec", choices=_names(Codec)),
    RunFlag("--level", "compression.level", "zstd level -7..22 or auto", _int_or_auto),
    RunFlag("--placement", "placement", "where workers run", choices=_names(Placement)),
    RunFlag(
        "--nodes", "placementNodes", "placement nodes: node names, comma-separated", _node_list
    ),
    RunFlag("--topology-key", "placementTopologyKey", "placement spread: the node label"),
    RunFlag(
        "--path",
        "network.path",
        "pod: pod IP to pod IP; service: through each peer's ClusterIP Service (kube-proxy)",
        choices=_names(NetworkPath),
    ),
    RunFlag("--port", "network.port", "data port", int),
    RunFlag(
        "--status-interval",
        "statusIntervalSeconds",
        "seconds between figures (samples): shorter gives more samples per run",
        int,
    ),
)  # fmt: skip

#: A bounded run's end: the run's own conditions.
DONE_PHASES = ("Completed", "Failed")
#: Degraded for these reasons does not heal by itself: `--wait` stops after a grace.
STUCK_REASONS = ("WorkerCannotRun", "InvalidSpec", "NoWorkerImage", "UnsafeSysctls")
STUCK_GRACE_SECONDS = 60.0


def add_command(commands: argparse._SubParsersAction[Any]) -> None:
    run = kubectl_flags.add_command(
        commands,
        "run",
        help="create a CompressionCluster from flags (--dry-run, --wait, --rm)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("name", help="the cluster's name")
    for item in RUN_FLAGS:
        choices = f" ({' | '.join(item.choices)})" if item.choices else ""
        run.add_argument(
            item.flag,
            dest=_dest(item),
            type=item.type,
            choices=item.choices,
            help=item.help + choices,
            metavar=item.flag.lstrip("-").upper().replace("-", "_") if not item.choices else None,
        )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="any other spec field, e.g. network.socketBufferBytes=0 (VALUE as JSON, else text)",
    )
    run.add_argument(
        "--dry-run",
        choices=("none", "client", "server"),
        default="none",
        help="client: print the manifest; server: the API server validates it, nothing is created",
    )
    run.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json", "name"),
        default=None,
        help="--dry-run: the manifest as yaml (default), json or name; --wait: json prints"
        " the finished cluster instead of the result lines",
    )
    run.add_argument("--wait", action="store_true", help="follow the run, print its result")
    run.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="--wait gives up after this (default: the duration times --samples + 300 s,"
        " plus 60 s per further sample)",
    )
    run.add_argument("--rm", action="store_true", help="with --wait: delete the cluster after")


def _dest(item: RunFlag) -> str:
    return "spec_" + item.flag.lstrip("-").replace("-", "_")


def set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    """`a.b.c` = value in nested dicts, creating the parents."""
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"{path}: {key} is not an object")
        node = child
    node[last] = value


def _parse_set(text: str) -> tuple[str, Any]:
    path, sep, raw = text.partition("=")
    if not sep or not path:
        raise PluginError(f"--set {text!r}: expected PATH=VALUE", EXIT_USAGE)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return path.strip(), value


def build_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The spec the flags describe (only what was given: the API fills the defaults)."""
    spec: dict[str, Any] = {}
    for item in RUN_FLAGS:
        value = getattr(args, _dest(item))
        if value is not None:
            set_path(spec, item.path, value)
    for text in args.set:
        path, value = _parse_set(text)
        try:
            set_path(spec, path, value)
        except ValueError as error:
            raise PluginError(f"--set {error}", EXIT_USAGE) from None
    return spec


def flag_for(location: Sequence[int | str], message: str = "") -> str:
    """The flag that sets a pydantic error's location (or `--set PATH` for the others).

    A rule across fields has no location; its message starts with the field it names
    (`placementNodes: ...`, as the API server's CEL message does)."""
    path = ".".join(str(part) for part in location)
    named = re.match(r"([A-Za-z]+(?:\.[A-Za-z]+)*): ", message)
    if not path and named:
        path = named.group(1)
    for item in RUN_FLAGS:
        if path == item.path or path.startswith(item.path + "."):
            return item.flag
    return f"--set {path}" if path else "the flags"


def validate(spec: Mapping[str, Any]) -> CompressionClusterSpec:
    """The API's own validation; its first problem as one line naming the flag, exit 2."""
    try:
        return CompressionClusterSpec.model_validate(dict(spec))
    except ValidationError as error:
        first = error.errors()[0]
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        flag = flag_for(first.get("loc", ()), message)
        raise PluginError(f"{flag}: {message}", EXIT_USAGE) from None


def manifest(name: str, namespace: str | None, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "spec": dict(spec),
    }


def check_flags(args: argparse.Namespace, spec: Mapping[str, Any]) -> float | None:
    """Usage errors between flags; the run's duration in seconds (None: unbounded)."""
    try:
        seconds = parse_duration(str(spec.get("duration", "")))
    except ValueError as error:
        raise PluginError(f"--duration: {error}", EXIT_USAGE) from None
    if args.rm and not args.wait:
        raise PluginError("--rm needs --wait (it deletes the cluster after the run)", EXIT_USAGE)
    if args.wait and seconds is None:
        raise PluginError("--wait needs --duration: an unbounded run never ends", EXIT_USAGE)
    if args.wait and args.dry_run != "none":
        raise PluginError("--wait and --dry-run do not go together", EXIT_USAGE)
    if args.timeout is not None and args.timeout <= 0:
        raise PluginError("--timeout must be positive", EXIT_USAGE)
    return seconds


def condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((item for item in status.get("conditions") or [] if item.get("type") == kind), None)


def outcome_code(cluster: Mapping[str, Any]) -> int:
    """0 ok, 1 failed, 3 expectations missed (when the spec has `expect` and the operator
    sets `Passed`)."""
    status = cluster.get("status") or {}
    if status.get("phase") == "Failed":
        return EXIT_FAILURE
    passed = condition(status, "Passed")
    if (cluster.get("spec") or {}).get("expect") and passed is not None:
        return EXIT_OK if passed.get("status") == "True" else kubectl_flags.EXIT_EXPECTATION_MISSED
    return EXIT_OK


def progress_line(status: Mapping[str, Any]) -> str:
    parts = [str(status.get("phase") or "Pending"), f"ready {status.get('ready') or '-'}"]
    if status.get("throughput"):
        parts.append(str(status["throughput"]))
    degraded = condition(status, "Degraded")
    if degraded is not None and degraded.get("status") == "True":
        parts.append(f"Degraded {degraded.get('reason', '')}: {degraded.get('message', '')}")
    return ", ".join(parts)


def result_lines(cluster: Mapping[str, Any]) -> list[str]:
    """The finished run as a person reads it: figures, then where its links ran."""
    spec = cluster.get("spec") or {}
    status = cluster.get("status") or {}
    runs = status.get("runs") or []
    name = (cluster.get("metadata") or {}).get("name", "")
    if not runs:
        return [f"{name}: {status.get('phase', 'no phase')}, no finished run"]
    run = runs[-1]
    totals = run.get("totals") or {}
    interval = run.get("throughput") or {}
    links = int(run.get("links", 0))
    sharing = int(run.get("linksSharingNode", 0))
    network = spec.get("network") or {}
    sample_set = parse_status(status).samples
    set_lines = [f"  {samples_line(sample_set)}"] if sample_set is not None else []
    return [
        f"{name} {run.get('id', '')}: {run.get('outcome', '')} after {run.get('seconds', 0)} s,"
        f" {run.get('workers', 0)} workers on {run.get('nodes', 0)} nodes",
        f"  throughput {run.get('throughputBytesPerSecond', 0) / 1e6:,.1f} MB/s raw"
        f" (mean {interval.get('mean', 0) / 1e6:,.1f} ± {interval.get('ci95', 0) / 1e6:,.1f},"
        f" {interval.get('samples', 0)} samples), wire"
        f" {run.get('wireBytesPerSecond', 0) / 1e6:,.1f} MB/s, ratio"
        f" {run.get('compressionRatio', 0)}, {run.get('batchesPerSecond', 0):,.1f} batches/s",
        f"  batches {totals.get('batches', 0)}, lost {totals.get('lostBatches', 0)},"
        f" corrupt {totals.get('corruptBatches', 0)}, resent {totals.get('resentBatches', 0)}",
        f"  links {links}: {links - sharing} cross-node, {sharing} same-node;"
        f" placement {spec.get('placement', 'preferred')}, path {network.get('path', 'pod')}"
        f"{', host network' if network.get('hostNetwork') else ''}",
        *set_lines,
    ]


def run_command(args: argparse.Namespace, connect: Callable[[], Any]) -> int:
    """Everything the flags can be wrong about is checked before `connect()`: a usage
    error never waits for an API server, and `--dry-run=client` needs none (like
    kubectl's, its manifest names a namespace only when -n does)."""
    spec = build_spec(args)
    seconds = check_flags(args, spec)
    validate(spec)
    if args.dry_run == "client":
        _print_object(manifest(args.name, args.namespace, spec), args.output or "yaml")
        return EXIT_OK
    source = connect()
    body = manifest(args.name, source.namespace, spec)
    created = source.create_cluster(body, dry_run=args.dry_run == "server")
    if args.dry_run == "server":
        _print_object(created, args.output or "yaml")
        return EXIT_OK
    print(f"compressioncluster.w5xde.io/{args.name} created", file=sys.stderr)
    if not args.wait:
        if args.output is not None:
            _print_object(created, args.output)
        return EXIT_OK
    assert seconds is not None
    samples = int(spec.get("samples", 1))
    # Each sample waits for its own workers: the default allows 300 s over the samples'
    # own lengths, and 60 s more per further sample for its fresh workers to come up.
    timeout = (
        args.timeout if args.timeout is not None else samples * seconds + 300 + 60 * (samples - 1)
    )
    try:
        final = follow(source, args.name, timeout)
        if args.output == "json":
            print(json.dumps(final, indent=2))
        else:
            for line in result_lines(final):
                print(line)
        return outcome_code(final)
    finally:
        if args.rm:
            source.delete_cluster(args.name)
            print(f"compressioncluster.w5xde.io/{args.name} deleted", file=sys.stderr)


def follow(
    source: Any,
    name: str,
    timeout: float,
    *,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the run is over (Completed or Failed) and return the cluster; a line on
    stderr whenever what a person would watch changes.  PluginError on a timeout, or on
    a Degraded reason that does not heal (e.g. a placement the scheduler cannot meet)."""
    deadline = clock() + timeout
    shown = ""
    stuck_since: float | None = None
    while True:
        cluster: dict[str, Any] = source.cluster(name)
        status = cluster.get("status") or {}
        generation = (cluster.get("metadata") or {}).get("generation", 0)
        current = status.get("observedGeneration") == generation
        line = progress_line(status)
        if line != shown:
            print(f"{name}: {line}", file=sys.stderr)
            shown = line
        if current and status.get("phase") in DONE_PHASES:
            return cluster
        degraded = condition(status, "Degraded")
        if (
            degraded is not None
            and degraded.get("status") == "True"
            and (degraded.get("reason") in STUCK_REASONS)
        ):
            stuck_since = stuck_since if stuck_since is not None else clock()
            if clock() - stuck_since >= STUCK_GRACE_SECONDS:
                raise PluginError(
                    f"{name} cannot run: {degraded.get('reason')}: {degraded.get('message', '')}"
                )
        else:
            stuck_since = None
        if clock() >= deadline:
            raise PluginError(f"{name} did not finish within {timeout:.0f} s ({line})")
        sleep(interval)


def _print_object(body: Mapping[str, Any], output: str) -> None:
    from w5xde.plugin import listing

    if output == "name":
        print(f"compressioncluster.w5xde.io/{body['metadata']['name']}")
        return
    sys.stdout.write(listing.dump(body, output))
