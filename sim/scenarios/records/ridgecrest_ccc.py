"""Makes ridgecrest-ccc.csv from the CSMIP Volume 1 file CICCC.RAW that gmprocess ships
(see README.md): the three channels, baseline removed, trimmed, as seconds,ew,ns,ud in g.

Usage: python ridgecrest_ccc.py PATH/TO/CICCC.RAW [OUT.csv]"""

from __future__ import annotations

import re
import sys
from pathlib import Path

RATE_HZ = 100  # the file's own rate ("at 100 pts/sec"): no resampling needed
AXIS = {"90 Deg": "ew", "360 Deg": "ns", "Up": "ud"}
LEAD_S = 10.0  # kept before the first arrival (pre-event noise)
TAIL_S = 5.0  # kept after 95% of the horizontal Arias intensity


def channels(text: str) -> dict[str, list[float]]:
    """Each channel's samples (g), named by its orientation."""
    out: dict[str, list[float]] = {}
    lines = text.splitlines()
    name = ""
    i = 0
    while i < len(lines):
        m = re.match(r"Chan\s+\d+:\s+(.*\S)", lines[i])
        if m:
            name = AXIS[m.group(1)]
        m = re.match(r"\s*(\d+) Accelerogram points at (\d+) pts/sec in units of g\.", lines[i])
        if m:
            n, rate = int(m.group(1)), int(m.group(2))
            assert rate == RATE_HZ, rate
            vals: list[float] = []
            while len(vals) < n:
                i += 1
                row = lines[i]
                vals += [float(row[k:k + 9]) for k in range(0, len(row.rstrip()), 9)]
            out[name] = vals
        i += 1
    return out


def main(src: Path, dest: Path) -> None:
    ch = channels(src.read_text())
    n = min(len(v) for v in ch.values())
    pre = 10 * RATE_HZ  # the first 10 s are before any arrival: their mean is the offset
    for k, v in ch.items():
        mean = sum(v[:pre]) / pre
        ch[k] = [x - mean for x in v[:n]]
    noise = max(abs(x) for v in ch.values() for x in v[:pre])
    first = next(i for i in range(n) if any(abs(ch[k][i]) > 10 * noise for k in ch))
    i95 = _arias_times(ch["ew"], ch["ns"])[1]
    a = max(0, first - int(LEAD_S * RATE_HZ))
    b = min(n, i95 + int(TAIL_S * RATE_HZ))
    out = {k: [round(x, 5) + 0.0 for x in v[a:b]] for k, v in ch.items()}  # + 0.0: no "-0"
    with dest.open("w") as f:
        f.write("seconds,ew,ns,ud\n")
        for i in range(b - a):
            f.write(f"{i / RATE_HZ:.2f},{out['ew'][i]:.5f},{out['ns'][i]:.5f},"
                    f"{out['ud'][i]:.5f}\n")
    # The times a scenario needs, measured on the record as written (what a board plays).
    s5, s95 = _arias_times(out["ew"], out["ns"])
    peak = max(range(b - a), key=lambda i: max(abs(out["ew"][i]), abs(out["ns"][i])))
    print(f"{dest}: {b - a} rows, {(b - a) / RATE_HZ:g} s from {a / RATE_HZ:g} s of the file. "
          f"In it: first arrival (above 10 times the pre-event noise of {noise:.5f} g) at "
          f"{(first - a) / RATE_HZ:g} s; 5% of the horizontal Arias intensity at "
          f"{s5 / RATE_HZ:g} s, 95% at {s95 / RATE_HZ:g} s; largest horizontal value "
          f"{max(abs(out['ew'][peak]), abs(out['ns'][peak])):.3f} g at {peak / RATE_HZ:g} s; "
          f"last row at {(b - a - 1) / RATE_HZ:g} s")


def _arias_times(ew: list[float], ns: list[float]) -> tuple[int, int]:
    """Samples where the horizontal Arias intensity (the running sum of ew^2 + ns^2) reaches
    5% and 95% of its total: the significant duration D5-95 (Trifunac and Brady, 1975)."""
    run = [0.0]
    for x, y in zip(ew, ns, strict=True):
        run.append(run[-1] + x * x + y * y)
    return (next(i for i, v in enumerate(run) if v >= 0.05 * run[-1]),
            next(i for i, v in enumerate(run) if v >= 0.95 * run[-1]))

if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "ridgecrest-ccc.csv"))
