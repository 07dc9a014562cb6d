"""`make demo`: the demo block scenario (sim/scenarios/demo-block.toml): a camera node on the
sample clip and three sensor boards with their anomalies, against a private local broker,
with a live table, a pass/fail summary and a report with its PNG timeline.

Starts and stops everything itself; never touches a system broker or the shared folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.camera import camera_config
from sim.cli import exit_cleanly_on_sigterm
from sim.runner import Options, prepare, run, summary
from sim.scenario import ScenarioError

ROOT = Path(__file__).resolve().parent.parent
CAMERA = ROOT / "sim" / "cameras" / "vtest-plaza.toml"
SCENARIO = ROOT / "sim" / "scenarios" / "demo-block.toml"

__all__ = ["CAMERA", "SCENARIO", "camera_config", "main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--var", type=Path, default=ROOT / "var")
    ap.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto")
    ap.add_argument("--plain", action="store_true", help="log lines, not a live table")
    args = ap.parse_args(argv)
    var = args.var.resolve()
    try:
        scenario = prepare(SCENARIO)
    except ScenarioError as exc:
        for line in exc.errors:
            print(f"{exc.source}: {line}", file=sys.stderr)
        return 2
    options = Options(report=var / "demo" / "report", work=var / "demo" / "work",
                      shared=args.shared.resolve(), var=var, broker=args.broker,
                      tty=False if args.plain else None)
    exit_cleanly_on_sigterm()
    outcome = run(scenario, SCENARIO.parent, options, sys.stdout)
    print(summary(outcome))
    print(f"timeline: {outcome.files['png']}")
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
