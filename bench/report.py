"""Collects figures with their targets and writes the results file with the machine description.

Only formats and writes; measuring is the other bench modules' job."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Figure:
    group: str
    name: str
    value: float | int | str | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    import onnxruntime

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem,
            "python": platform.python_version(), "machine": platform.machine(),
            "onnxruntime": onnxruntime.__version__,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write(figures: list[Figure], out: Path, keep_other_groups: bool = False) -> Path:
    """Write results.json and results.md. keep_other_groups (a run of some groups only):
    the other groups' figures of the previous file stay, with the date of their own run
    (`runs`: group -> date), so nothing older passes for this run's."""
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    runs = {f.group: m["date"] for f in figures}
    old_path = out / "results.json"
    if keep_other_groups and old_path.exists():
        old = json.loads(old_path.read_text())
        old_runs = old.get("runs") or {g["group"]: old["machine"]["date"]
                                       for g in old.get("figures", [])}
        kept = [Figure(**f) for f in old.get("figures", []) if f["group"] not in runs]
        runs = {**{f.group: old_runs[f.group] for f in kept}, **runs}
        figures = kept + figures
    (out / "results.json").write_text(json.dumps(
        {"machine": m, "runs": runs, "figures": [asdict(f) for f in figures]}, indent=2))
    lines = ["# Benchmark results", "",
             "Machine: " + ", ".join(f"{k}={v}" for k, v in m.items()), "",
             "Runs: " + ", ".join(f"{g} {d}" for g, d in sorted(runs.items())), "",
             "| group | figure | value | unit | target | met | note |",
             "|---|---|---|---|---|---|---|"]
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "**NO**")
        val = f"{f.value:.3g}" if isinstance(f.value, float) else str(f.value)
        lines.append(f"| {f.group} | {f.name} | {val} | {f.unit} | {f.target} | {met} | {f.note} |")
    missed = [f for f in figures if f.met is False]
    lines += ["", f"{len(missed)} target(s) not met."]
    lines += [f"- NOT MET: {f.group} / {f.name}: {f.value} {f.unit} (target {f.target}). {f.note}"
              for f in missed]
    path = out / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def show(f: Figure) -> None:
    met = "" if f.met is None else ("  ok" if f.met else "  NOT MET")
    val = f"{f.value:.3g}" if isinstance(f.value, float) else str(f.value)
    print(f"  {f.group:<10} {f.name:<52} {val:>10} {f.unit:<8} target {f.target or '-'}{met}",
          flush=True)
