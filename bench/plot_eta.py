"""Pictures of the ETA over one recorded migration: ``python -m bench.plot_eta TRACE... --out DIR``.

For each trace, one SVG: the *predicted end* of the migration (elapsed + ETA, on the job's
own clock) at every sample, as the agent would have shown it (``eta_replay.estimates``: the
same replay ``make bench-eta`` scores), with its band; the naive remaining / rate on the
same samples; the true end; and the pass boundaries. A perfect estimate is a flat line on
the true end from the first sample on. Operators see at a glance what the checkpoint tables
say: how early the estimate settles, how honest its band is, and how the naive number swings
as the guest re-dirties memory.

Pure SVG text, no plotting library: ``chart`` turns the series into the picture (tested),
``main`` reads traces and writes files. Regenerate the pictures in docs/ with
``make bench-plot``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from migwatch.agent.backends.trace import TraceError, read_trace
from migwatch.agent.backends.tracefacts import preflight_of, true_duration_s

from bench.eta_replay import FLAGS, agent_estimator_config, with_naive

__all__ = ["Point", "Series", "chart", "main", "series_of"]

WIDTH, HEIGHT = 720, 360
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 44, 46
EST, BAND, NAIVE, TRUTH, FLAG = "#1f5fbf", "#9cc0f0", "#e07b00", "#222222", "#c0392b"


@dataclass(frozen=True, slots=True)
class Point:
    """One sample: the job's elapsed time and what each method predicted for the end."""

    t: float
    end: float | None  # elapsed + ETA; None: no ETA (e.g. not converging)
    low: float | None
    high: float | None  # None with an end: the band is open above
    naive: float | None
    iteration: int
    flagged: bool = False  # the verdict is NOT_CONVERGING or STALLED: act on it


@dataclass(frozen=True, slots=True)
class Series:
    """What one picture shows."""

    title: str
    points: tuple[Point, ...]
    true_end: float | None  # None: the migration did not complete by itself


def series_of(path: Path) -> Series:
    """The agent's replay of one trace, with the pre-flight where it was recorded."""
    trace = read_trace(path)
    points = []
    for step, e, naive in with_naive(trace, preflight_of(trace), agent_estimator_config()):
        t = step.sample.elapsed_s
        end = None if e.eta_s is None else t + e.eta_s
        points.append(
            Point(
                t=t,
                end=end,
                low=None if e.eta_low_s is None or end is None else t + e.eta_low_s,
                high=None if e.eta_high_s is None or end is None else t + e.eta_high_s,
                naive=None if naive is None else t + naive,
                iteration=step.sample.iteration,
                flagged=e.convergence in FLAGS,
            )
        )
    outcome = trace.result.outcome if trace.result is not None else "?"
    return Series(f"{path.stem} ({outcome})", tuple(points), true_duration_s(trace))


def chart(series: Series) -> str:
    """The SVG picture of ``series`` (see the module docstring)."""
    pts = series.points
    if not pts:
        raise ValueError(f"{series.title}: no running samples to draw")
    t_max = max(p.t for p in pts)
    truth = series.true_end
    # The y range holds the truth and the estimates; far-off naive values are clipped to
    # twice that, so one wild reading does not flatten the rest.
    ends = [v for p in pts for v in (p.end, p.low) if v is not None]
    highs = [p.high for p in pts if p.high is not None]
    y_top = max([t_max, *(ends or [t_max]), *(highs or [0.0])] + ([truth] if truth else []))
    y_top = min(y_top, 2.0 * max(truth or t_max, t_max)) * 1.05
    x_top = max(t_max, truth or 0.0) * 1.02
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(v: float) -> float:
        return LEFT + pw * min(max(v / x_top, 0.0), 1.0)

    def y(v: float) -> float:
        return TOP + ph * (1.0 - min(max(v / y_top, 0.0), 1.0))

    out = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">'
        ),
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        (
            f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">'
            f"{escape(series.title)}: predicted end of the migration, at every sample</text>"
        ),
    ]
    out += _axes(x, y, x_top, y_top)
    # Pass boundaries: where the migration's own measurements arrive.
    last_it = None
    for p in pts:
        if p.iteration != last_it and p.iteration >= 2:
            out.append(
                f'<line class="pass" x1="{x(p.t):.1f}" y1="{TOP}" x2="{x(p.t):.1f}" '
                f'y2="{TOP + ph}" stroke="#dddddd"/>'
            )
        last_it = p.iteration
    out += _band(pts, x, y, y_top)
    out += _polylines("naive", [(p.t, p.naive) for p in pts], x, y, NAIVE, 1.2)
    out += _polylines("estimate", [(p.t, p.end) for p in pts], x, y, EST, 2.0)
    flag = next((p for p in pts if p.flagged), None)
    if flag is not None:
        out.append(
            f'<line class="flag" x1="{x(flag.t):.1f}" y1="{TOP}" x2="{x(flag.t):.1f}" '
            f'y2="{TOP + ph}" stroke="{FLAG}" stroke-width="2"/>'
        )
        out.append(
            f'<text x="{x(flag.t) + 4:.1f}" y="{TOP + 12}" fill="{FLAG}">'
            f"flagged at {flag.t:.1f} s (pass {flag.iteration}): not converging</text>"
        )
    if truth is not None:
        out.append(
            f'<line class="truth" x1="{LEFT}" y1="{y(truth):.1f}" x2="{LEFT + pw}" '
            f'y2="{y(truth):.1f}" stroke="{TRUTH}" stroke-dasharray="6 4"/>'
        )
    out += _legend(truth)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _axes(x: object, y: object, x_top: float, y_top: float) -> list[str]:
    assert callable(x) and callable(y)
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = [
        f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="black"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="black"/>',
        (
            f'<text x="{LEFT + pw / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">'
            "elapsed (s, the job's own clock)</text>"
        ),
        (
            f'<text x="14" y="{TOP + ph / 2:.0f}" transform="rotate(-90 14 {TOP + ph / 2:.0f})" '
            'text-anchor="middle">predicted end (s)</text>'
        ),
    ]
    for v in _ticks(x_top):
        out.append(f'<text x="{x(v):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{v:g}</text>')
    for v in _ticks(y_top):
        out.append(f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        out.append(
            f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + pw}" y2="{y(v):.1f}" stroke="#f0f0f0"/>'
        )
    return out


def _ticks(top: float) -> list[float]:
    """Round tick values from 0 to ``top``: about five."""
    if top <= 0:
        return [0.0]
    raw = top / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(top / step) + 1)]


def _band(pts: Sequence[Point], x: object, y: object, y_top: float) -> list[str]:
    """The band as one filled polygon per run of samples that have one (an open upper edge
    drawn to the top)."""
    assert callable(x) and callable(y)
    out: list[str] = []
    run: list[Point] = []
    for p in [*pts, None]:
        if p is not None and p.end is not None and p.low is not None:
            run.append(p)
            continue
        if len(run) >= 2:
            upper = [f"{x(q.t):.1f},{y(q.high if q.high is not None else y_top):.1f}" for q in run]
            lower = [f"{x(q.t):.1f},{y(q.low or 0.0):.1f}" for q in reversed(run)]
            out.append(
                f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{BAND}" '
                'fill-opacity="0.55" stroke="none"/>'
            )
        run = []
    return out


def _polylines(
    cls: str, values: Sequence[tuple[float, float | None]], x: object, y: object, color: str,
    width: float,
) -> list[str]:  # fmt: skip
    """One polyline per run of samples with a value (a gap where there is none)."""
    assert callable(x) and callable(y)
    out: list[str] = []
    run: list[str] = []
    for t, v in [*values, (0.0, None)]:
        if v is not None and math.isfinite(v):
            run.append(f"{x(t):.1f},{y(v):.1f}")
            continue
        if len(run) >= 2:
            out.append(
                f'<polyline class="{cls}" points="{" ".join(run)}" fill="none" '
                f'stroke="{color}" stroke-width="{width}"/>'
            )
        run = []
    return out


def _legend(truth: float | None) -> list[str]:
    items = [
        (EST, "migwatch ETA (elapsed + ETA)", ""),
        (BAND, "its band", ""),
        (NAIVE, "naive: remaining / rate", ""),
    ]
    if truth is not None:
        items.append((TRUTH, f"true end ({truth:.1f} s)", ' stroke-dasharray="6 4"'))
    # Bottom right: by then every line is near the true end, well above the axis.
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x0 = LEFT + pw - 230
    y0 = TOP + ph - 15 * len(items) - 8
    out = [
        (
            f'<rect x="{x0 - 6}" y="{y0 - 10}" width="232" height="{15 * len(items) + 8}" '
            'fill="white" fill-opacity="0.85" stroke="#cccccc"/>'
        )
    ]
    for i, (color, label, dash) in enumerate(items):
        yy = y0 + 15 * i
        out.append(
            f'<line x1="{x0}" y1="{yy}" x2="{x0 + 22}" y2="{yy}" stroke="{color}" '
            f'stroke-width="4"{dash}/>'
        )
        out.append(f'<text x="{x0 + 28}" y="{yy + 4}">{escape(label)}</text>')
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot_eta", description=__doc__)
    parser.add_argument("traces", nargs="+", help="trace files (*.jsonl)")
    parser.add_argument("--out", default="docs/img", help="directory for the SVGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.traces:
        try:
            svg = chart(series_of(Path(name)))
        except (TraceError, OSError, ValueError) as exc:
            print(f"bench.plot_eta: {name}: {exc}", file=sys.stderr)
            return 1
        target = out / f"eta-{Path(name).stem}.svg"
        target.write_text(svg)
        print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
