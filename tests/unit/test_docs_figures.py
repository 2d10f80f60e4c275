"""The project's own figures never go stale: README's measured table and
docs/PERFORMANCE.md's headline tables are what the committed bench JSON renders."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "bench" / "render_docs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy(tmp_path: Path) -> Path:
    for name in ("README.md", "docs/PERFORMANCE.md", "bench/results.json",
                 "bench/status-results.json", "bench/memory-results.json",
                 "bench/links-results.json"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_committed_docs_are_what_the_committed_bench_json_renders() -> None:
    difference = _renderer().stale(ROOT)
    assert difference == "", "run `make docs-figures`:\n" + difference


def test_every_headline_table_is_rendered() -> None:
    readme = (ROOT / "README.md").read_text()
    performance = (ROOT / "docs" / "PERFORMANCE.md").read_text()
    assert "<!-- figures:readme-measured " in readme
    for name in ("performance-rows", "performance-targets", "performance-status",
                 "performance-memory", "performance-links"):  # fmt: skip
        assert f"<!-- figures:{name} " in performance


def test_one_changed_readme_figure_is_caught(tmp_path: Path) -> None:
    render = _renderer()
    root = _copy(tmp_path)
    readme = root / "README.md"
    text = readme.read_text()
    figure = next(line for line in text.splitlines() if "3.6 KB batches" in line)
    changed = figure.replace("batches/s", "batches/s (faster)", 1)
    readme.write_text(text.replace(figure, changed))
    difference = render.stale(root)
    assert "README.md (committed)" in difference
    assert "(faster)" in difference


def test_new_bench_json_changes_the_rendered_docs(tmp_path: Path) -> None:
    render = _renderer()
    root = _copy(tmp_path)
    results = root / "bench" / "results.json"
    data = json.loads(results.read_text())
    data["targets"]["pair_vs_zstd_nc"]["factor"] = 9.99
    results.write_text(json.dumps(data))
    difference = render.stale(root)
    assert "9.99x" in difference
    assert "README.md" in difference
    assert "PERFORMANCE.md" in difference


def test_new_memory_and_link_figures_change_the_rendered_docs(tmp_path: Path) -> None:
    render = _renderer()
    root = _copy(tmp_path)
    memory = root / "bench" / "memory-results.json"
    data = json.loads(memory.read_text())
    data["idle_peers"]["per_peer_mb"] = 9.87
    memory.write_text(json.dumps(data))
    links = root / "bench" / "links-results.json"
    data = json.loads(links.read_text())
    data["targets"]["links"][0]["auto_over_best"] = 0.5
    links.write_text(json.dumps(data))
    difference = render.stale(root)
    assert "**9.87 MB**" in difference
    assert "50.0% (best" in difference
