"""Render the project's own figures from committed bench JSON (issue 20, item 7).

README's "What it does, measured" table and docs/PERFORMANCE.md's headline tables
(the worker table, the targets, reporting at scale) sit between markers:

    <!-- figures:NAME (rendered by bench/render_docs.py from bench/*.json; do not edit) -->
    ...
    <!-- /figures:NAME -->

`python bench/render_docs.py` rewrites them from bench/results.json and
bench/status-results.json; `--check` exits 1 and prints the difference when the
committed docs are not what the committed JSON renders (`make docs-figures-check`,
and tests/unit/test_docs_figures.py in `make test`).
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
    low, high = min(values), max(values)
    text = f"{low:,.{digits}f}"
    if high != low:
        text += f"{EN_DASH}{high:,.{digits}f}"
    return f"{text}{unit}"


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


RENDERERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], str]] = {
    "performance-baseline": performance_baseline,
    "readme-measured": readme_measured,
    "performance-rows": performance_rows,
    "performance-targets": performance_targets,
    "performance-status": performance_status,
}
DOCS = ("README.md", "docs/PERFORMANCE.md")


def render_text(text: str, bench: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """`text` with every figures block rendered again; an unknown block name is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in RENDERERS:
            raise KeyError(f"no renderer for figures:{name}")
        return match.group("open") + RENDERERS[name](bench, status) + match.group("close")

    return _BLOCK.sub(replace, text)


def rendered(root: Path = ROOT) -> dict[Path, tuple[str, str]]:
    """Per doc: (committed text, what the committed JSON renders)."""
    bench, status = _load(root, "results.json"), _load(root, "status-results.json")
    out = {}
    for name in DOCS:
        path = root / name
        text = path.read_text()
        out[path] = (text, render_text(text, bench, status))
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
