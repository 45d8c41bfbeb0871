"""An evacuation plan as a picture: ``migwatch evacuate-estimate --svg FILE``. Pure.

One row per guest in the order the plan starts them: its migration as a bar from its start
to its predicted end, the band of its duration as a whisker, migrations already in flight in
their own colour (they hold their slots from now), and the guests left out (they would not
converge) listed below with why. The host's total is a vertical line with its band shaded: a
drain is a schedule, and a schedule is read faster as a chart than as a table. Plain SVG
text, no plotting library, so the CLI needs nothing more.
"""

from __future__ import annotations

import math
from html import escape

from .model import EvacuationEntry, EvacuationEstimate

__all__ = ["plan_svg"]

_W = 760
_ROW = 22
_LEFT, _RIGHT, _TOP = 170, 24, 56
_PLANNED, _FLYING, _POSTCOPY, _BAND, _BLOCKED = (
    "#1f5fbf", "#7a4fbf", "#2e8b57", "#9cc0f0", "#c0392b",
)  # fmt: skip


def plan_svg(plan: EvacuationEstimate, agent: str = "") -> str:
    """The SVG picture of ``plan`` (see the module docstring)."""
    rows = [e for e in plan.entries if e.start_offset_s is not None and e.duration_s is not None]
    left_out = [e for e in plan.entries if e not in rows]
    ends = [
        (e.start_offset_s or 0.0) + (e.duration_high_s or e.duration_s or 0.0) for e in rows
    ] + [plan.total_high_s or 0.0, plan.total_s or 0.0, 1.0]
    x_top = max(v for v in ends if math.isfinite(v)) * 1.05
    plot_w = _W - _LEFT - _RIGHT
    body_h = _ROW * max(len(rows), 1)
    height = _TOP + body_h + 10 + 52 + 16 * len(left_out) + 4

    def x(v: float) -> float:
        return _LEFT + plot_w * min(max(v / x_top, 0.0), 1.0)

    host = escape(plan.host)
    total = (
        f"~{_dur(plan.total_s)} ({_dur(plan.total_low_s)}-{_dur(plan.total_high_s)})"
        if plan.total_s is not None
        else "no total"
    )
    how = f"{plan.concurrency} at a time, " + (
        "order as given" if plan.order_given else "longest first"
    )
    if not plan.empties:
        how += f"; stay until remedied: {', '.join(plan.blocking_domains)}"
    if agent and agent != plan.host:
        how += f"; agent {agent}"
    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
            f'viewBox="0 0 {_W} {height}" font-family="sans-serif" font-size="12">'
        ),
        f'<rect width="{_W}" height="{height}" fill="white"/>',
        (
            f'<text x="10" y="20" font-size="14" font-weight="bold">Evacuation of {host}: '
            f"{escape(total)} until the planned guests have left</text>"
        ),
        f'<text x="10" y="38" fill="#555555">{escape(_short(how, 115))}</text>',
    ]
    if plan.total_s is not None:
        lo, hi = plan.total_low_s or plan.total_s, plan.total_high_s
        right = x(hi) if hi is not None else _LEFT + plot_w
        out.append(
            f'<rect class="total-band" x="{x(lo):.1f}" y="{_TOP - 6}" '
            f'width="{max(right - x(lo), 1.0):.1f}" height="{body_h + 12}" fill="{_BAND}" '
            'fill-opacity="0.35"/>'
        )
        out.append(
            f'<line class="total" x1="{x(plan.total_s):.1f}" y1="{_TOP - 6}" '
            f'x2="{x(plan.total_s):.1f}" y2="{_TOP + body_h + 6}" stroke="black" '
            'stroke-dasharray="5 3"/>'
        )
    for i, e in enumerate(rows):
        out += _row(e, _TOP + i * _ROW, x, _LEFT + plot_w)
    axis_y = _TOP + body_h + 10
    out.append(
        f'<text x="{_LEFT + plot_w}" y="{axis_y + 30}" text-anchor="end" fill="#555555">'
        "bars: each migration as planned; whiskers: its band; dashed: the total, shaded: "
        "its band</text>"
    )
    out.append(
        f'<line x1="{_LEFT}" y1="{axis_y}" x2="{_LEFT + plot_w}" y2="{axis_y}" stroke="black"/>'
    )
    for v in _ticks(x_top):
        out.append(f'<text x="{x(v):.1f}" y="{axis_y + 14}" text-anchor="middle">{_dur(v)}</text>')
    y = axis_y + 52
    for e in left_out:
        out.append(
            f'<text class="left-out" x="10" y="{y}" fill="{_BLOCKED}">left out: '
            f"{escape(_short(f'{e.domain_name}: {e.reason}', 108))}</text>"
        )
        y += 16
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _row(e: EvacuationEntry, top: float, x: object, right_edge: float) -> list[str]:
    assert callable(x)
    start = e.start_offset_s or 0.0
    dur = e.duration_s or 0.0
    color = _FLYING if e.in_flight else _POSTCOPY if e.post_copy_applied else _PLANNED
    label = e.domain_name + (" (in flight)" if e.in_flight else f" #{e.order}")
    mid = top + _ROW / 2
    out = [
        f'<text x="{_LEFT - 8}" y="{mid + 4:.1f}" text-anchor="end">{escape(label)}</text>',
        (
            f'<rect class="bar" x="{x(start):.1f}" y="{top + 4:.1f}" '
            f'width="{max(x(start + dur) - x(start), 1.0):.1f}" height="{_ROW - 8}" '
            f'fill="{color}"><title>{escape(e.domain_name)}: {escape(e.reason)}</title></rect>'
        ),
    ]
    low = start + (e.duration_low_s if e.duration_low_s is not None else dur)
    high_x = (
        x(start + e.duration_high_s) if e.duration_high_s is not None else right_edge
    )  # open above: to the edge
    out.append(
        f'<line class="whisker" x1="{x(low):.1f}" y1="{mid:.1f}" x2="{high_x:.1f}" '
        f'y2="{mid:.1f}" stroke="black" stroke-width="1.5"/>'
    )
    return out


def _ticks(top: float) -> list[float]:
    raw = top / 6
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(top / step) + 1)]


def _dur(v: float | None) -> str:
    if v is None:
        return "?"
    if v < 120:
        return f"{v:.0f}s"
    m, s = divmod(round(v), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def _short(text: str, n: int = 110) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
