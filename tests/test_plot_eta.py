"""The ETA pictures (bench/plot_eta.py): what they draw, from series and from real traces."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.plot_eta import HEIGHT, Point, Series, chart, main, series_of

REPO = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"


def _shapes(svg: str, tag: str, cls: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == cls]


def _coords(e: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in (e.get("points") or "").split()]  # type: ignore[misc]


def test_chart_draws_estimate_band_naive_truth_and_the_flag() -> None:
    """Every sample with an ETA is a vertex of the estimate's line (a gap where there is
    none), the band is a polygon whose open upper edge goes to the top, the true end is one
    horizontal line, and the first flagged sample gets its marker."""
    pts = (
        Point(1.0, 20.0, 15.0, 30.0, 40.0, 1),
        Point(2.0, 20.5, 16.0, None, 25.0, 1),  # band open above
        Point(3.0, 21.0, 18.0, 24.0, 22.0, 2),
        Point(4.0, None, None, None, 30.0, 2, flagged=True),  # no ETA: a gap
        Point(5.0, 21.0, 20.0, 22.0, 21.5, 3),
        Point(6.0, 21.0, 20.5, 21.5, 21.2, 3),
    )
    svg = chart(Series("demo", pts, 21.0))
    (est1, est2) = _shapes(svg, "polyline", "estimate")
    assert len(_coords(est1)) == 3 and len(_coords(est2)) == 2
    bands = _shapes(svg, "polygon", "band")
    assert len(bands) == 2
    top = min(y for _, y in _coords(bands[0]))
    assert top == pytest.approx(44.0, abs=0.5), "the open edge reaches the plot's top"
    (truth,) = _shapes(svg, "line", "truth")
    assert truth.get("y1") == truth.get("y2")
    # The truth (21 s) and the estimate's last vertex (21 s) are drawn at the same height.
    assert float(truth.get("y1") or 0) == pytest.approx(_coords(est2)[-1][1], abs=0.1)
    (flag,) = _shapes(svg, "line", "flag")
    assert "flagged at 4.0 s (pass 2)" in svg
    assert 0 < float(flag.get("x1") or 0) and float(flag.get("y2") or 0) < HEIGHT
    assert len(_shapes(svg, "polyline", "naive")) == 1


def test_chart_of_nothing_is_refused() -> None:
    """A trace with no running sample has nothing to draw: a clear error, not an empty picture."""
    with pytest.raises(ValueError, match="no running samples"):
        chart(Series("empty", (), None))


def test_a_recorded_storage_migration_is_drawn_from_its_replay(tmp_path: Path) -> None:
    """The QMP storage recording becomes one point per running sample, ending on its true
    end (20.7 s), with the estimate close to it at the end; ``main`` writes the SVG."""
    trace = REPO / "bench" / "traces" / "qmp-disk.jsonl"
    series = series_of(trace)
    assert series.true_end == pytest.approx(20.73)
    assert len(series.points) > 60 and series.points[0].t < 1.0
    last = [p for p in series.points if p.end is not None][-1]
    assert abs(last.end - series.true_end) < 0.05 * series.true_end  # type: ignore[operator]
    assert main([str(trace), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "eta-qmp-disk.svg").read_text().startswith("<svg")
    assert main([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 1
