"""`make bench`: runs every benchmark group in one process and writes bench/results/.

Each group measures in the same run, so ratios compare figures taken under the same load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import report
from bench.report import Figure

ROOT = Path(__file__).resolve().parent.parent


def _agent(shared: Path, var: Path) -> list[Figure]:
    from bench import agent

    return agent.run(shared, var)


def _firmware(shared: Path, var: Path) -> list[Figure]:
    from bench import firmware

    return [Figure("firmware", f["name"], f["value"], f["unit"], f["target"], f["met"],
                   f["note"]) for f in firmware.run()]


def _fleet(shared: Path, var: Path) -> list[Figure]:
    from bench import fleet

    return fleet.run(shared, var)


def _load(shared: Path, var: Path) -> list[Figure]:
    from bench import load

    return load.run(shared, var)


GROUPS = {"agent": _agent, "firmware": _firmware, "fleet": _fleet, "load": _load}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--var", type=Path, default=ROOT / "var")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--only", choices=sorted(GROUPS), action="append",
                    help="run only these groups (repeatable)")
    args = ap.parse_args(argv)
    figures: list[Figure] = []
    for name in args.only or list(GROUPS):
        print(f"{name}:", flush=True)
        got = GROUPS[name](args.shared, args.var.resolve())
        for f in got:
            report.show(f)
        figures += got
    path = report.write(figures, args.out, keep_other_groups=bool(args.only))
    if args.out.resolve() == (ROOT / "bench" / "results").resolve():
        from bench import readme

        readme.update()  # the README quotes this run, never an older one
    missed = sum(f.met is False for f in figures)
    print(f"\nwrote {path}; {missed} target(s) not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
