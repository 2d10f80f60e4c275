"""`kubectl w5xde status|runs|results|compare`: read a cluster's results."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from w5xde.plugin import results as plugin_results
from w5xde.plugin import views
from w5xde.plugin.source import ClusterSource, PluginError

EXIT_USAGE = 2


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="kubectl w5xde", description=__doc__)
    root.add_argument("-n", "--namespace", help="the cluster's namespace (default: the context's)")
    root.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    root.add_argument("--context", help="kubeconfig context")
    commands = root.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="the cluster's figures, notable workers, runs")
    status.add_argument("name")
    status.add_argument(
        "--workers",
        action="store_true",
        help="pull every worker's report now: the per-worker and per-link tables",
    )
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=2.0, help="--watch refresh seconds")
    status.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="json: with --watch one JSON line per interval, the first the configuration",
    )
    runs = commands.add_parser("runs", help="the kept runs with their confidence intervals")
    runs.add_argument("name")
    results = commands.add_parser("results", help="a run's results as JSON or CSV")
    results.add_argument("name")
    results.add_argument("-o", "--output", choices=("json", "csv"), default="json")
    results.add_argument("--run", help="run id (default: the last finished run)")
    results.add_argument(
        "--check",
        action="store_true",
        help="exit 3 unless the run passed its spec.expect (docs/results.md)",
    )
    compare = commands.add_parser("compare", help="two runs side by side, with their intervals")
    compare.add_argument("name")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument(
        "--fail-if-slower",
        metavar="PERCENT",
        help="exit 3 when run_b is slower than run_a by more than PERCENT (e.g. 5%%) "
        "beyond both 95%% intervals",
    )
    return root


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    # Piped output (a file, a test, `| less`) keeps whole rows rather than 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    source = ClusterSource(args.kubeconfig, args.context, args.namespace)
    if args.command == "status":
        if args.interval <= 0:
            raise PluginError("--interval must be positive", EXIT_USAGE)
        if args.output == "json":
            return _status_json(source, args)
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
        if args.output == "csv":
            sys.stdout.write(views.results_csv(status, chosen.id))
        else:
            sys.stdout.write(plugin_results.results_json(cluster, chosen) + "\n")
        missed = plugin_results.check_message(chosen) if args.check else None
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


def _status(source: ClusterSource, args: argparse.Namespace) -> Any:
    cluster = source.cluster(args.name)
    status = views.typed(cluster.get("status") or {})
    reports = None
    if args.workers:
        pods = [f"{args.name}-{index}" for index in range(int(cluster["spec"].get("workers", 0)))]
        reports = source.worker_reports(args.name, pods)
    return views.status_view(args.name, status, reports)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except PluginError as error:
        print(f"kubectl w5xde: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
