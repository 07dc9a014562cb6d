"""The README's speed figures are those of the latest bench run: the block between its
markers is exactly what bench/readme.py writes from bench/results/results.json."""

from __future__ import annotations

import json
from pathlib import Path

from bench import readme

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_quotes_the_latest_bench_results() -> None:
    text = (ROOT / "README.md").read_text()
    results = json.loads((ROOT / "bench" / "results" / "results.json").read_text())
    start, end = text.index(readme.BEGIN), text.index(readme.END) + len(readme.END)
    assert text[start:end] == readme.block(results), \
        "README and bench/results disagree: run `make bench` (it rewrites the README block)"


def test_a_new_run_rewrites_the_block_and_marks_missing_figures(tmp_path: Path) -> None:
    results = json.loads((ROOT / "bench" / "results" / "results.json").read_text())
    results["machine"]["date"] = "2031-01-02T03:04:05Z"
    results.pop("runs", None)  # a whole run: the machine's date heads the block
    results["figures"] = [f for f in results["figures"]
                          if f["name"] != readme.KEY[0][1]]
    res = tmp_path / "results.json"
    res.write_text(json.dumps(results))
    md = tmp_path / "README.md"
    md.write_text("intro\n" + readme.BEGIN + "\nold numbers\n" + readme.END + "\nrest\n")
    assert readme.update(md, res) is True
    text = md.read_text()
    assert "old numbers" not in text and "(2031-01-02;" in text  # no runs: the machine date
    assert f"| {readme.KEY[0][2]} | not measured in this run | |" in text
    assert text.startswith("intro\n") and text.endswith("\nrest\n")
    assert readme.update(md, res) is False  # nothing changes twice


def test_a_run_of_some_groups_keeps_the_others_with_their_own_dates(tmp_path: Path) -> None:
    from bench import report
    from bench.report import Figure

    out = tmp_path / "results"
    report.write([Figure("agent", "a", 1.0, "x"), Figure("firmware", "f", 2.0, "y")], out)
    first = json.loads((out / "results.json").read_text())
    report.write([Figure("firmware", "f", 3.0, "y")], out, keep_other_groups=True)
    second = json.loads((out / "results.json").read_text())
    assert [(f["group"], f["value"]) for f in second["figures"]] == [("agent", 1.0),
                                                                     ("firmware", 3.0)]
    assert second["runs"]["agent"] == first["runs"]["agent"]
    report.write([Figure("firmware", "f", 4.0, "y")], out)  # a whole run: only its figures
    assert [f["group"] for f in json.loads((out / "results.json").read_text())["figures"]] \
        == ["firmware"]
