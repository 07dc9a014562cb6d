"""The README's speed figures, written from the latest bench/results/results.json between
two markers, so the numbers in the README are always those of the latest run (a test
fails when they are not). Only formats; the figures come from the bench run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bench:begin: written by make bench from bench/results/results.json -->"
END = "<!-- bench:end -->"

KEY = (
    ("agent", "bare session.run, stock model, 2 at a time x 1 thread(s)",
     "bare `session.run`, stock model, 2 workers x 1 thread"),
    ("agent", "pipeline, gating off, stock model, 2 worker(s) x 1 thread(s)",
     "whole pipeline, stock model, 2 workers x 1 thread"),
    ("agent", "pipeline, gating off, dynamic model, 2 worker(s) x 1 thread(s)",
     "whole pipeline, dynamic-input copy, 2 workers x 1 thread"),
    ("agent", "pipeline / bare limit, gating off, same model and input",
     "pipeline / bare, same model and input"),
    ("agent", "pipeline on the dynamic-input copy / bare limit of the stock model",
     "pipeline on the dynamic copy / bare stock model"),
    ("agent", "static scene cost per frame / one detected frame",
     "a still scene's cost per frame / a detected frame's"),
    ("agent", "event agreement, gating on vs off (plaza rules on vtest)",
     "events with motion gating / without"),
    ("agent", "event latency capture -> subscriber, p95",
     "event latency, capture to subscriber, p95"),
    ("agent", "agent peak RSS with YOLOX-Nano", "agent peak memory (RSS)"),
    ("agent", "int8 / float speed (YOLOX-Nano), 1 thread per inference",
     "int8 / float speed, 1 thread per inference"),
    ("agent", "int8 vs float detection agreement", "int8 vs float detection agreement"),
)
"""(group, figure name in the results, label in the README)."""


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "-" if v is None else str(v)


def block(results: dict[str, Any]) -> str:
    """The generated part of the README for these results."""
    m = results["machine"]
    runs = results.get("runs") or {}
    dates = ", ".join(f"{g} {d[:10]}" for g, d in sorted(runs.items())) or m["date"][:10]
    by = {(f["group"], f["name"]): f for f in results["figures"]}
    lines = [BEGIN, "",
             f"From the latest `make bench` run of each group ({dates}; {m['cpu']}, "
             f"{m['cores']} cores, onnxruntime {m['onnxruntime']}); every figure, with how "
             "it was measured, is in `bench/results/results.md`:", "",
             "| figure | value | target |", "|---|---|---|"]
    for group, name, label in KEY:
        f = by.get((group, name))
        if f is None:
            lines.append(f"| {label} | not measured in this run | |")
            continue
        met = "" if f["met"] is None else (" (met)" if f["met"] else " (**not met**)")
        lines.append(f"| {label} | {_value(f['value'])} {f['unit']} | "
                     f"{f['target']}{met} |")
    others = [f for f in results["figures"] if f["met"] is not None
              and (f["group"], f["name"]) not in {(g, n) for g, n, _ in KEY}]
    for f in others:  # every other figure with a target, met or not
        met = " (met)" if f["met"] else " (**not met**)"
        lines.append(f"| {f['group']}: {f['name']} | {_value(f['value'])} {f['unit']} | "
                     f"{f['target']}{met} |")
    lines += ["", END]
    return "\n".join(lines)


def update(readme: Path = ROOT / "README.md",
           results: Path = ROOT / "bench" / "results" / "results.json") -> bool:
    """Rewrite the README's block from the results; True when it changed."""
    text = readme.read_text()
    if BEGIN not in text:
        raise ValueError(f"{readme}: no {BEGIN!r} marker")
    new = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END),
                 lambda _: block(json.loads(results.read_text())), text, flags=re.S)
    if new != text:
        readme.write_text(new)
    return new != text
