"""Render the project's own figures from committed bench JSON (issue 20, item 7).

README's "What it does, measured" table and docs/PERFORMANCE.md's headline tables
(the worker table, the targets, reporting at scale) sit between markers:

    <!-- figures:NAME (rendered by bench/render_docs.py from bench/*.json; do not edit) -->
    ...
    <!-- /figures:NAME -->

`python bench/render_docs.py` rewrites them from bench/results.json,
bench/status-results.json and bench/memory-results.json; `--check` exits 1 and
prints the difference when the committed docs are not what the committed JSON
renders (`make docs-figures-check`, and tests/unit/test_docs_figures.py in `make
test`).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
SEED_BATCH = 3600

_BLOCK = re.compile(
    r"(?P<open><!-- figures:(?P<name>[a-z-]+) [^>]*-->\n)"
    r"(?P<body>.*?)(?P<close><!-- /figures:(?P=name) -->)",
    re.S,
)
#: Between the ends of a range of figures (as the docs have always written them).
EN_DASH = "\N{EN DASH}"


def _load(root: Path, name: str) -> dict[str, Any]:
    """A bench JSON file as a mapping (a bare list of rows becomes `{"rows": [...]}`)."""
    data = json.loads((root / "bench" / name).read_text())
    return {"rows": data} if isinstance(data, list) else dict(data)


def _row(bench: Mapping[str, Any], workers: int = 2, **match: Any) -> dict[str, Any]:
    """The first w5xde row with TLS on, one thread and `workers` workers with these fields."""
    for row in bench["rows"]:
        extra = row["extra"]
        shape = (row["kind"], extra.get("threads", 1), extra.get("workers", 2), extra.get("tls"))
        defaults = ("w5xde", 1, workers, True)
        if shape == defaults and all(row.get(k) == v for k, v in match.items()):
            found: dict[str, Any] = row
            return found
    raise KeyError(f"bench/results.json has no {workers}-worker w5xde row with {match}")


def _make_run_row(bench: Mapping[str, Any]) -> list[str]:
    """README's `make run` row, once `make bench` measured it (4 workers, level 3)."""
    try:
        row = _row(bench, workers=4, batch_bytes=64 * 1024, level=3, log_mode="silent")
    except KeyError:
        return []
    return [
        f"| `make run`'s defaults (4 workers, level 3, TLS on; {bench['duration_per_run_s']:.0f} s "
        f"in `make bench`) | {row['raw_mb_s']:,.0f} MB/s raw, ratio {row['ratio']:.2f}, "
        f"{row['lost']} lost, {row['rss_mb_max']:.0f} MB per worker | |"
    ]


def _range(values: list[float], digits: int = 0, unit: str = "") -> str:
    low, high = f"{min(values):,.{digits}f}", f"{max(values):,.{digits}f}"
    # Ends that print alike are one figure ("59 MB", not "59-59 MB").
    return f"{low}{unit}" if high == low else f"{low}{EN_DASH}{high}{unit}"


def _hundreds(value: float) -> float:
    return round(value / 100) * 100


def readme_measured(bench: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """README's table: the headline figures at the current defaults (TLS on)."""
    pair = _row(bench, batch_bytes=64 * 1024, level=1, log_mode="silent", socket_buffer=4 * MIB)
    factor = bench["targets"]["pair_vs_zstd_nc"]["factor"]
    runs = pair["extra"].get("runs_raw_mb_s", [pair["raw_mb_s"]])
    small = [_row(bench, batch_bytes=SEED_BATCH, level=level) for level in (1, 3)]
    batches = [_hundreds(row["batches_per_s"]) for row in small]
    defaults = [
        _row(bench, batch_bytes=64 * 1024, level=3, log_mode="silent", socket_buffer=4 * MIB),
        pair,
    ]
    rss = [row["rss_mb_max"] for row in defaults]
    scale = next(row for row in status["rows"] if row["workers"] == 1000)
    writes = scale["api_writes_per_s"] * scale["interval_s"]
    folded = "every report folded" if scale["incomplete_folds"] == 0 else "not every report folded"
    lines = [
        "| figure | W5XDE | the seed |",
        "| --- | ---: | ---: |",
        f"| 2 workers, 64 KiB batches, level 1, mixed data, TLS on | {_range(runs)} MB/s raw "
        f"({factor:.2f}x `zstd -1 \\| nc` in the same run) | 2.07 MB/s per cluster |",
        f"| 2 workers, 3.6 KB batches, TLS on | {_range(batches)} batches/s | 570 batches/s |",
        f"| RSS per worker at the defaults (TLS on) | {_range(rss, unit=' MB')} | 770 MB |",
        *_make_run_row(bench),
        f"| reporting at 1,000 workers (`make bench-status`, real API server) | {folded} "
        f"each {scale['interval_s']:.0f} s, {writes:.0f} status write per interval, "
        f"{scale['api_errors']} errors, {scale['cr_status_bytes'] / 1000:.1f} KB status, "
        f"{scale['apiserver_reporting_cpu_s_per_interval']:.2f} s API-server CPU per interval "
        "| collapsed near 100 workers (shared status object) |",
    ]
    return "\n".join(lines) + "\n"


def _cell(value: float, digits: int, empty: bool) -> str:
    return "-" if empty else f"{value:,.{digits}f}"


def performance_rows(bench: Mapping[str, Any], _status: Mapping[str, Any]) -> str:
    """docs/PERFORMANCE.md's worker table: every row of bench/results.json."""
    lines = [
        "| configuration | raw MB/s | wire MB/s | batches/s | ratio | net s/worker "
        "| comp s/worker | RSS MB/worker | lost | resent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in bench["rows"]:
        kind = row["kind"]
        worker = kind.startswith("w5xde")
        name = row["name"].replace("|", "\\|") + (" (1 core)" if kind == "codec" else "")
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{row['raw_mb_s']:,.1f}",
                    _cell(row["wire_mb_s"], 1, kind == "iperf3"),
                    _cell(row["batches_per_s"], 0, kind in ("pipeline", "iperf3")),
                    _cell(row["ratio"], 2, kind == "iperf3"),
                    _cell(row["network_s_per_worker"], 2, not worker),
                    _cell(row["compression_s_per_worker"], 2, not worker),
                    _cell(row["rss_mb_max"], 1, not worker),
                    str(row["lost"]) if worker else "-",
                    str(row["resent"]) if worker else "-",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def performance_targets(bench: Mapping[str, Any], _status: Mapping[str, Any]) -> str:
    targets = bench["targets"]
    pair, small, rss = (
        targets["pair_vs_zstd_nc"],
        targets["small_batches_per_s"],
        targets["rss_mb_per_worker_default"],
    )

    return (
        "\n".join(
            [
                "| target | result (this run) | |",
                "|---|---|---|",
                "| 2 workers, 64 KiB, level 1, mixed: >= 1.3x the raw MB/s of `zstd -1 \\| nc` "
                f"| {pair['w5xde_raw_mb_s']:.1f} vs {pair['zstd_nc_raw_mb_s']:.1f} MB/s = "
                f"**{pair['factor']:.2f}x** | {_met(pair['factor'] >= pair['target'])} |",
                "| 3.6 KB batches: >= 20,000 batches/s from a 2-worker local run "
                "(seed: 570/s) "
                f"| **{small['value']:,}/s** at level 3 "
                f"| {_met(small['value'] >= small['target'])} |",
                "| <= 80 MB RSS per worker at default settings (seed: 770 MB) "
                f"| **{rss['value']:.1f} MB** peak (64 KiB, level 3) "
                f"| {_met(rss['value'] <= rss['target'])} |",
                "| <= 64 MB RSS per worker at default settings (issue 21) "
                f"| **{rss['value']:.1f} MB** peak (64 KiB, level 3) "
                f"| {_met(rss['value'] <= 64)} |",
                *_tls_targets(bench.get("tls")),
            ]
        )
        + "\n"
    )


def _tls_targets(tls: Mapping[str, Any] | None) -> list[str]:
    """Issue 21's TLS cost targets: TLS on over off, medians of alternating runs."""
    if not tls:
        return []
    small = tls["small_batches"]

    return [
        f"| TLS on / off >= {tls['target']:.2f} at 64 KiB, level 1 "
        f"| {tls['tls_on_raw_mb_s']:.1f} / {tls['tls_off_raw_mb_s']:.1f} MB/s = "
        f"**{tls['tls_on_over_off']:.3f}** | {_met(tls['met'])} |",
        f"| TLS on / off >= {small['target']:.2f} at 3.6 KB, level 1 "
        f"| {small['tls_on_batches_per_s']:,} / {small['tls_off_batches_per_s']:,} batches/s = "
        f"**{small['tls_on_over_off']:.3f}** | {_met(small['met'])} |",
    ]


def performance_baseline(bench: Mapping[str, Any], _status: Mapping[str, Any]) -> str:
    """Old and new side by side, alternating in the one run that made results.json."""
    baseline = bench.get("baseline")
    if not baseline:
        return "No baseline in this run (`make bench BENCH_BASELINE=<ref>` adds one).\n"
    ref = baseline["ref"]
    lines = [
        f"| figure (mean ± 95 % CI, min–max of the runs) | old ({ref}) | new | verdict |",
        "|---|---:|---:|---|",
    ]

    def side(figure: Mapping[str, Any]) -> str:
        return (
            f"{figure['mean']:,.1f} ± {figure['ci95']:,.1f} "
            f"({figure['min']:,.1f}{EN_DASH}{figure['max']:,.1f}, n={figure['samples']})"
        )

    for verdict in baseline.get("verdicts", []):
        lines.append(
            f"| {verdict['figure']} | {side(verdict['old'])} | {side(verdict['new'])} "
            f"| {verdict['verdict']} |"
        )
    for row in (bench.get("scale") or {}).get("rows", []):
        figures = f"{row['raw_mb_s']:.1f} MB/s, {row['rss_mb_max']:.1f} MB, {row['threads_max']}"
        measured = float(row["extra"].get("duration_s", 0))
        asked = float(bench.get("duration_per_run_s", 0))
        if asked and measured > 1.5 * asked:
            # The run's figure is over its longest worker's time: say when that ran long.
            figures += f" (over {measured:.1f} s, {asked:.0f} s asked)"
        old_cell, new_cell = (figures, "") if row["code"] == "old" else ("", figures)
        lines.append(
            f"| {row['workers']} workers {row['topology']}: raw MB/s, peak RSS and threads "
            f"per worker | {old_cell} | {new_cell} | one run each |"
        )
    return "\n".join(lines) + "\n"


def performance_status(_bench: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    lines = [
        "| workers | reports folded/s | fold lag p99 | API writes/s | API errors | status bytes "
        "| API-server CPU on reporting per 10 s interval | operator RSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in status["rows"]:
        lines.append(
            f"| {row['workers']:,} | {row['reports_folded_per_s']:.1f} "
            f"| {row['fold_lag_p99_s']:.2f} s | {row['api_writes_per_s']:.2f} "
            f"| {row['api_errors']} | {row['cr_status_bytes']:,} "
            f"| {row['apiserver_reporting_cpu_s_per_interval']:.3f} s "
            f"| {row['operator_rss_bytes'] / 1e6:.0f} MB |"
        )
    return "\n".join(lines) + "\n"


def performance_memory(memory: Mapping[str, Any]) -> str:
    """docs/PERFORMANCE.md's memory tables: per component, the pair, idle peers."""
    lines = ["| component | MB |", "|---|---:|"]
    for component in memory["components"]:
        lines.append(f"| {component['component']} | {component['mb']:.2f} |")
    lines += [
        "",
        f"The pair at the defaults ({memory['defaults']}), peak RSS per worker (`VmHWM`);"
        " a stalled peer: the other worker's peak while its peer is stopped for 5 s and"
        " its replay window fills to the budget:",
        "",
    ]
    baseline = memory.get("baseline")
    if baseline:
        lines[-2] += (
            f" old (`{baseline['ref']}`) and new alternate in one run, each row's two"
            " columns side by side:"
        )
        lines += [
            "| batch | source | level | peak RSS MB, old / new "
            "| with a stalled peer, old / new | <= 64 MB |",
            "|---|---|---|---:|---:|---|",
        ]
    else:
        lines += [
            "| batch | source | level | peak RSS MB | with a stalled peer | <= 64 MB |",
            "|---|---|---|---:|---:|---|",
        ]
    target = memory["targets"]["rss_mb"]
    for row in memory["pair"]:
        batch = "64 KiB" if row["batch_bytes"] == 65536 else f"{row['batch_bytes'] / 1000:g} KB"
        worst = max(row["peak_rss_mb"], row["stalled_peer_peak_rss_mb"])
        verdict = _met(worst <= target) if row.get("level", "3") == "3" else "(not the default)"
        peak, stalled = f"{row['peak_rss_mb']:.1f}", f"{row['stalled_peer_peak_rss_mb']:.1f}"
        if baseline:
            peak = f"{row['baseline_peak_rss_mb']:.1f} / {peak}"
            stalled = f"{row['baseline_stalled_peer_peak_rss_mb']:.1f} / {stalled}"
        lines.append(
            f"| {batch} | {row['source']} | {row.get('level', '3')} | {peak} | {stalled} "
            f"| {verdict} |"
        )
    idle = memory["idle_peers"]
    sizes = ", ".join(
        f"{workers} workers {rss:.1f} MB"
        for workers, rss in zip(idle["workers"], idle["rss_mb_per_worker"], strict=True)
    )
    lines += [
        "",
        f"Idle peers (all-to-all at {idle['rate_bytes_per_s_per_worker'] / 1e6:g} MB/s per"
        f" worker, mean peak RSS per worker): {sizes}; one more peer (an outgoing and an"
        f" incoming TLS `stream` connection) costs **{idle['per_peer_mb']:.2f} MB**.",
    ]
    return "\n".join(lines) + "\n"


def _link(mbit: int) -> str:
    return "unshaped" if mbit == 0 else f"{mbit} Mbit/s"


def performance_links(links: Mapping[str, Any]) -> str:
    """docs/PERFORMANCE.md's shaped-link table and targets (`make bench-links`)."""
    load = ", ".join(f"{value:.1f}" for value in links["machine"]["load_average_at_end"])
    lines = [
        f"{links['rounds']} rounds in alternating order, {links['warm_up_seconds']:g} s warm-up"
        f" and {links['seconds_per_run']:g} s measured each, {links['batch_bytes'] // 1024} KiB"
        f" batches of `{links['source']}`; {links['wall_seconds'] / 60:.0f} min in all, load"
        f" average {load} at the end.",
        "",
        "| link | policy | raw MB/s (per direction) | rounds | wire MB/s | ratio | CPU s/GB "
        "| level at the end |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in links["rows"]:
        extra = row.get("extra", {})
        rounds = " / ".join(f"{value:.1f}" for value in extra.get("rounds_raw_mb_per_s", []))
        level = extra.get("link", {}).get("level", "-")
        lines.append(
            f"| {_link(row['link_mbit'])} | {row['policy']} | {row['raw_mb_per_s']:.1f} "
            f"| {rounds} | {row['wire_mb_per_s']:.1f} | {row['ratio']:.2f} "
            f"| {row['cpu_s_per_gb']:.1f} | {level} |"
        )
    targets = links["targets"]
    best = ", ".join(
        f"{_link(item['link_mbit'])} {item['auto_over_best']:.1%} (best {item['best_fixed']})"
        for item in targets["links"]
    )
    adapt = ", ".join(
        f"{_link(item['link_mbit'])} {item['auto_over_zstd_adapt_nc']:.2f}x"
        for item in targets["links"]
    )
    context = ", ".join(
        f"{_link(item['link_mbit'])} {item['stream_over_frame_ratio_l1']:.3f}x"
        for item in targets["links"]
        if "stream_over_frame_ratio_l1" in item
    )
    balance = targets["capacity_over_even"]
    within = all(item["auto_over_best"] >= 0.95 for item in targets["links"])
    above = all(item["auto_over_zstd_adapt_nc"] >= 1.2 for item in targets["links"])
    lines += [
        "",
        "| target | result | |",
        "|---|---|---|",
        f"| auto >= 95 % of the best fixed level on every link | {best} | {_met(within)} |",
        f"| auto >= 1.2x `zstd --adapt \\| nc` on every link | {adapt} | {_met(above)} |",
        f"| ratio at level 1, `stream` >= 1.07x `frame` | {context} "
        f"| {_met(all(item.get('stream_over_frame_ratio_l1', 0) >= 1.07 for item in targets['links']))} |",
        f"| 4 workers all-to-all, one link at a quarter: capacity >= {balance['target']}x even,"
        f" no batch lost | {balance['factor']:.2f}x, lost {balance['lost_batches']} "
        f"| {_met(balance['met'])} |",
    ]
    return "\n".join(lines) + "\n"


#: Each block and the bench JSON it is rendered from.
RENDERERS: dict[str, Callable[[Mapping[str, Mapping[str, Any]]], str]] = {
    "performance-baseline": lambda data: performance_baseline(data["results"], data["status"]),
    "readme-measured": lambda data: readme_measured(data["results"], data["status"]),
    "performance-rows": lambda data: performance_rows(data["results"], data["status"]),
    "performance-targets": lambda data: performance_targets(data["results"], data["status"]),
    "performance-status": lambda data: performance_status(data["results"], data["status"]),
    "performance-memory": lambda data: performance_memory(data["memory"]),
    "performance-links": lambda data: performance_links(data["links"]),
}
DOCS = ("README.md", "docs/PERFORMANCE.md")
JSON = {
    "results": "results.json",
    "status": "status-results.json",
    "memory": "memory-results.json",
    "links": "links-results.json",
}


def render_text(text: str, data: Mapping[str, Mapping[str, Any]]) -> str:
    """`text` with every figures block rendered again; an unknown block name is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise KeyError(f"no renderer for figures:{name}")
        return match.group("open") + RENDERERS[name](data) + match.group("close")

    return _BLOCK.sub(replace, text)


def rendered(root: Path = ROOT) -> dict[Path, tuple[str, str]]:
    """Per doc: (committed text, what the committed JSON renders)."""
    data = {key: _load(root, name) for key, name in JSON.items()}
    out = {}
    for name in DOCS:
        path = root / name
        text = path.read_text()
        out[path] = (text, render_text(text, data))
    return out


def stale(root: Path = ROOT) -> str:
    """A unified diff of the docs against their rendering ("" when they agree)."""
    diffs: list[str] = []
    for path, (text, fresh) in rendered(root).items():
        if text != fresh:
            diffs.extend(
                difflib.unified_diff(
                    text.splitlines(keepends=True),
                    fresh.splitlines(keepends=True),
                    f"{path.relative_to(root)} (committed)",
                    f"{path.relative_to(root)} (rendered from bench/*.json)",
                )
            )
    return "".join(diffs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the docs are stale")
    args = parser.parse_args()
    if args.check:
        difference = stale()
        if difference:
            sys.stdout.write(difference)
            print("docs figures are stale: run `make docs-figures`", file=sys.stderr)
            return 1
        return 0
    for path, (text, fresh) in rendered().items():
        if text != fresh:
            path.write_text(fresh)
            print(f"rendered {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
