"""The federation-gain curve as a small self-contained SVG, drawn from `bench.json` alone.

AUROC per population (one colour each) against the number of hospitals joined, for the
federated DP model (solid) and the best joined site alone without DP (dashed). Written beside
BENCH.md by `deploy.bench.readme`, so it is regenerated with the tables and never hand-made.
"""

from __future__ import annotations

import math
from typing import Any

from markupsafe import escape

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00")
WIDTH, HEIGHT, PAD = 520, 320, 48
FILE = "gain_curve.svg"  # beside BENCH.md


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def svg(designs: dict[str, Any]) -> str | None:
    """The plot, or None when the JSON has no curve."""
    curve = designs.get("gain_curve") or []
    if not curve:
        return None
    pops = sorted({p for point in curve for p in (point.get("federated_dp") or {})})
    xs = [point["sites"] for point in curve]
    values = [v for point in curve for key in ("federated_dp", "best_site_alone")
              for p in pops if _finite(v := _auroc(point, key, p))]
    if not values:
        return None
    lo, hi = math.floor(min(values) * 20) / 20, math.ceil(max(values) * 20) / 20
    hi = hi if hi > lo else lo + 0.05
    log_max = math.log2(max(xs)) or 1.0

    def px(x: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (math.log2(x) / log_max)

    def py(y: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (y - lo) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="18" text-anchor="middle">AUROC per population as '
           'hospitals join (spread design)</text>']
    for x in xs:
        out.append(f'<text x="{px(x):.1f}" y="{HEIGHT - PAD + 18}" text-anchor="middle">{x}'
                   '</text>')
    steps = round((hi - lo) / 0.05)
    for k in range(steps + 1):
        y = lo + 0.05 * k
        out.append(f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{PAD - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    out.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle">hospitals joined'
               '</text>')
    for i, pop in enumerate(pops):
        colour = PALETTE[i % len(PALETTE)]
        for key, dash in (("federated_dp", ""), ("best_site_alone", ' stroke-dasharray="5 4"')):
            pts = [(px(pt["sites"]), py(v)) for pt in curve
                   if _finite(v := _auroc(pt, key, pop))]
            if len(pts) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                           f'stroke-width="2"{dash}/>')
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in pts]
        out.append(f'<text x="{WIDTH - PAD + 4}" y="{PAD + 16 * i}" fill="{colour}">'
                   f'{escape(pop)}</text>')
    out.append(f'<text x="{PAD + 4}" y="{PAD - 8}" fill="#444">solid: federated DP; dashed: best '
               'joined site alone, no DP</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _auroc(point: dict[str, Any], key: str, pop: str) -> float | None:
    row = (point.get(key) or {}).get(pop)
    return row.get("auroc") if isinstance(row, dict) else row
