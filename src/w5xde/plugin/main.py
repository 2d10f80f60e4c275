"""`kubectl w5xde status|runs|results|compare|run|report`: start runs and read their results.

Global flags (-n/--namespace, --context, --kubeconfig) go anywhere on the line.
Exit codes: 0 ok, 1 failure, 2 usage, 3 a run missed its expectations."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from w5xde import __version__, kube_errors
from w5xde.plugin import kubectl_flags, listing, views
from w5xde.plugin import results as plugin_results
from w5xde.plugin.kubectl_flags import EXIT_USAGE, add_command
from w5xde.plugin.source import ClusterSource, PluginError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="kubectl w5xde",
        description=__doc__,
        parents=[kubectl_flags.global_flags(suppress=False)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument(
        "--version",
        action="store_true",
        help="the plugin's version and the operator's (from its Deployment), then exit",
    )
    commands = root.add_subparsers(dest="command", metavar="COMMAND")
    status = add_command(
        commands, "status", help="a cluster's figures, notable workers, runs; no NAME: list"
    )
    status.add_argument("name", nargs="?", help="the cluster (none: every cluster, as a table)")
    status.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list the clusters of every namespace"
    )
    kubectl_flags.add_output(status, ("table", "wide", "json", "yaml"), "table")
    status.add_argument(
        "--workers",
        action="store_true",
        help="pull every worker's report now: the per-worker and per-link tables",
    )
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=2.0, help="--watch refresh seconds")
    runs = add_command(commands, "runs", help="the kept runs with their confidence intervals")
    runs.add_argument("name")
    results = add_command(commands, "results", help="a run's results as JSON or CSV")
    results.add_argument("name")
    results.add_argument("-o", "--output", choices=("json", "csv"), default="json")
    results.add_argument("--run", help="run id (default: the last finished run)")
    results.add_argument(
        "--check",
        action="store_true",
        help="exit 3 unless the run passed its spec.expect (docs/results.md)",
    )
    compare = add_command(commands, "compare", help="two runs side by side, with their intervals")
    compare.add_argument("name")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument(
        "--fail-if-slower",
        metavar="PERCENT",
        help="exit 3 when run_b is slower than run_a by more than PERCENT (e.g. 5%%) "
        "beyond both 95%% intervals",
    )
    from w5xde.plugin import run as run_module

    run_module.add_command(commands)
    report = add_command(
        commands, "report", help="a support bundle (.tar.gz): objects, events, logs, reports"
    )
    report.add_argument("name")
    report.add_argument(
        "-f", "--file", help="where to write it (default: w5xde-report-NS-NAME-TIME.tar.gz)"
    )
    return root


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    # Piped output (a file, a test, `| less`) keeps whole rows rather than 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    if args.version:
        print(f"kubectl-w5xde: {__version__}")
        source = ClusterSource(args.kubeconfig, args.context, args.namespace)
        for line in listing.operator_lines(source.operators()):
            print(line)
        return 0
    if args.command == "run":
        from w5xde.plugin import run as run_module

        return run_module.run_command(
            args, lambda: ClusterSource(args.kubeconfig, args.context, args.namespace)
        )
    source = ClusterSource(args.kubeconfig, args.context, args.namespace)
    if args.command == "report":
        from w5xde.plugin import report_bundle

        print(report_bundle.report_command(source, args.name, args.file))
        return 0
    if args.command == "status":
        if args.interval <= 0:
            raise PluginError("--interval must be positive", EXIT_USAGE)
        if args.name is None or args.all_namespaces:
            return _list(source, args, console)
        if args.output == "json" and args.watch:
            return _status_json(source, args)
        if args.output in ("json", "yaml"):
            sys.stdout.write(listing.dump(source.cluster(args.name), args.output))
            return 0
        _warn_without_operator(source, [source.cluster(args.name)])
        if args.watch:
            from rich.live import Live

            with Live(_status(source, args), console=console, auto_refresh=False) as live:
                try:
                    while True:
                        time.sleep(args.interval)
                        live.update(_status(source, args), refresh=True)
                except KeyboardInterrupt:
                    return 0
        console.print(_status(source, args))
        return 0
    if args.command == "compare" and args.fail_if_slower is not None:
        try:
            tolerance: float | None = plugin_results.parse_fraction(args.fail_if_slower)
        except ValueError as error:
            raise PluginError(str(error), EXIT_USAGE) from None
    else:
        tolerance = None
    cluster = source.cluster(args.name)
    status = views.typed(cluster.get("status") or {})
    if not status.runs:
        raise PluginError(f"{source.namespace}/{args.name} has no finished runs yet")
    if args.command == "runs":
        console.print(views.runs_table(status))
    elif args.command == "results":
        chosen = views.find_run(status, args.run)
        if chosen is None:
            raise PluginError(f"no run {args.run!r} in {source.namespace}/{args.name}")
        sample_set = plugin_results.finished_set(status) if args.run is None else None
        if args.output == "csv":
            sys.stdout.write(views.results_csv(status, chosen.id))
        elif sample_set is not None:  # the whole set, as `w5xde local --samples` prints it
            sys.stdout.write(plugin_results.sample_set_json(cluster, status) + "\n")
        else:
            sys.stdout.write(plugin_results.results_json(cluster, chosen) + "\n")
        if not args.check:
            missed = None
        elif sample_set is not None:
            missed = plugin_results.set_check_message(sample_set)
        else:
            missed = plugin_results.check_message(chosen)
        if missed is not None:
            print(f"kubectl w5xde: {missed}", file=sys.stderr)
            return plugin_results.EXIT_GATE
    elif args.command == "compare":
        first, second = views.find_run(status, args.run_a), views.find_run(status, args.run_b)
        for wanted, found in ((args.run_a, first), (args.run_b, second)):
            if found is None:
                raise PluginError(f"no run {wanted!r} in {source.namespace}/{args.name}")
        assert first is not None
        assert second is not None
        for line in views.compare_lines(first, second):
            print(line)
        slower = (
            plugin_results.slower_message(first, second, tolerance)
            if tolerance is not None
            else None
        )
        if slower is not None:
            print(f"kubectl w5xde: {slower}", file=sys.stderr)
            return plugin_results.EXIT_GATE
    return 0


def _status_json(source: ClusterSource, args: argparse.Namespace) -> int:
    """`status -o json`: the configuration line, then one line per interval (once
    without --watch), flushed as it comes."""
    cluster = source.cluster(args.name)
    print(plugin_results.configuration_line(args.name, cluster), flush=True)
    while True:
        status = views.typed(cluster.get("status") or {})
        print(plugin_results.interval_line(args.name, status), flush=True)
        if not args.watch:
            return 0
        time.sleep(args.interval)
        cluster = source.cluster(args.name)


def _list(source: ClusterSource, args: argparse.Namespace, console: Any) -> int:
    if args.name is not None:
        raise PluginError("a NAME and -A do not go together", EXIT_USAGE)
    if args.workers or args.watch:
        raise PluginError("--workers and --watch need a cluster NAME", EXIT_USAGE)
    items = source.clusters(args.all_namespaces)
    if args.output in ("json", "yaml"):
        sys.stdout.write(listing.dump(listing.as_list(items), args.output))
        return 0
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {source.namespace}"
        print(f"No compressionclusters found in {where}.", file=sys.stderr)
    else:
        table = listing.clusters_table(
            items, all_namespaces=args.all_namespaces, wide=args.output == "wide"
        )
        console.print(table)
    _warn_without_operator(source, items)
    return 0


def _warn_without_operator(source: ClusterSource, clusters: list[dict[str, Any]]) -> None:
    """When a cluster is not reconciled (its status is behind its spec) and no operator
    Deployment is ready, say why on stderr (so `-o json` and pipes stay clean).  An
    operator running elsewhere (a process, another cluster) keeps the status current,
    so it never triggers this."""
    if not any(listing.unreconciled(item) for item in clusters):
        return
    try:
        warning = listing.operator_warning(source.operators())
    except Exception:  # noqa: BLE001 - a hint only: never fail `status` for it
        return
    if warning:
        print(warning, file=sys.stderr)


def _status(source: ClusterSource, args: argparse.Namespace) -> Any:
    cluster = source.cluster(args.name)
    status = views.typed(cluster.get("status") or {})
    reports = None
    if args.workers:
        pods = [f"{args.name}-{index}" for index in range(int(cluster["spec"].get("workers", 0)))]
        reports = source.worker_reports(args.name, pods)
    return views.status_view(args.name, status, reports)


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    if args.command is None and not args.version:
        arguments.print_usage(sys.stderr)
        print("kubectl w5xde: error: a COMMAND is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(args)
    except PluginError as error:
        print(f"kubectl w5xde: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        message = kube_errors.describe(error, kube_errors.api_server())
        if message is None:
            raise
        print(f"kubectl w5xde: {message}", file=sys.stderr)
        return kubectl_flags.EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
