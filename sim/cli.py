"""The `edge-sim` command: run a scenario (or only check it) and map the outcome to an exit
code: 0 every expectation held, 1 one did not, 2 the scenario file is bad.

Parses arguments and prints; holds no simulation logic of its own."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sim.brokers import CHOICES
from sim.runner import Options, broker_problems, prepare, run, summary
from sim.scenario import ScenarioError

ROOT = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge-sim", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario and judge what arrives")
    r.add_argument("scenario", type=Path)
    r.add_argument("--report", type=Path, default=None,
                   help="report folder (default: var/sim/<scenario>/report)")
    r.add_argument("--speed", type=float, default=None,
                   help="simulated seconds per real second (overrides time_scale)")
    r.add_argument("--broker", choices=list(CHOICES), default="auto",
                   help="auto: Mosquitto when installed, else the embedded amqtt broker; "
                        "nats-cluster: three NATS members on loopback, nodes spread over them")
    r.add_argument("--shared", type=Path, default=ROOT.parent / "shared",
                   help="shared media and models (camera nodes)")
    r.add_argument("--var", type=Path, default=ROOT / "var",
                   help="work files, downloaded media and models")
    r.add_argument("--plain", action="store_true",
                   help="log lines instead of a table redrawn in place")
    ld = sub.add_parser("load", help="thousands of lightweight contract clients, a quake-"
                                     "sized alarm burst and a broker killed under them")
    ld.add_argument("--clients", type=int, default=1000)
    ld.add_argument("--telemetry-s", type=float, default=10.0,
                    help="seconds between one client's telemetry messages")
    ld.add_argument("--brokers", default="mosquitto,nats-cluster",
                    help="comma-separated, run one after the other: mosquitto, nats-cluster")
    ld.add_argument("--steady-s", type=float, default=10.0)
    ld.add_argument("--no-storm", action="store_true", help="skip the broker kill")
    ld.add_argument("--json", type=Path, default=None, help="write the figures here too")
    c = sub.add_parser("check", help="validate a scenario file only")
    c.add_argument("scenario", type=Path)
    c.add_argument("--speed", type=float, default=None)
    sub.add_parser("docs", help="print the scenario reference (docs/scenarios.md) from the "
                                "schema")
    return ap


def _bad(exc: ScenarioError) -> int:
    for line in exc.errors:
        print(f"{exc.source}: {line}", file=sys.stderr)
    return 2


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM ends a run like Ctrl-C: through the runner's cleanup, so no board, agent or
    broker process outlives it (Python's default for SIGTERM skips `finally`)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)


def _load(args: argparse.Namespace) -> int:
    import json

    from sim.load import BROKERS, LoadSpec, run_one, table

    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    bad = [b for b in brokers if b not in BROKERS]
    problems = ([f"--brokers: unknown {', '.join(bad)} (one of {', '.join(BROKERS)})"]
                if bad or not brokers else [])
    if not 1 <= args.clients <= 20_000:
        problems.append(f"--clients: {args.clients} is not in 1..20000")
    if not 0.1 <= args.telemetry_s <= 3600:
        problems.append(f"--telemetry-s: {args.telemetry_s} is not in 0.1..3600")
    if not 1 <= args.steady_s <= 600:
        problems.append(f"--steady-s: {args.steady_s} is not in 1..600")
    for p in problems:
        print(f"edge-sim load: {p}", file=sys.stderr)
    if problems:
        return 2
    spec = LoadSpec(clients=args.clients, telemetry_s=args.telemetry_s,
                    steady_s=args.steady_s, storm=not args.no_storm)
    exit_cleanly_on_sigterm()
    results = [run_one(b, spec) for b in brokers]
    print(table(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "load":
        return _load(args)
    if args.command == "docs":
        from sim.scenario_doc import render

        print(render(), end="")
        return 0
    try:
        scenario = prepare(args.scenario, args.speed)
    except ScenarioError as exc:
        return _bad(exc)
    if args.command == "run":
        problems = broker_problems(scenario, args.broker)
        if problems:
            return _bad(ScenarioError(str(args.scenario), problems))
    if args.command == "check":
        print(f"{args.scenario}: ok ({len(scenario.node_ids())} nodes, "
              f"{len(scenario.expect) + len(scenario.expect_none)} expectations)")
        return 0
    var = args.var.resolve()
    base = var / "sim" / args.scenario.stem
    options = Options(report=(args.report or base / "report").resolve(), work=base / "work",
                      shared=args.shared.resolve(), var=var, broker=args.broker,
                      tty=False if args.plain else None)
    exit_cleanly_on_sigterm()
    outcome = run(scenario, args.scenario.resolve().parent, options, sys.stdout)
    print(summary(outcome))
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
