"""A predicted end that keeps moving: receding or approaching. Pure: no I/O, no clock.

An unbiased ETA keeps the predicted end (``elapsed + eta``) still: each second of job time
takes a second off the ETA. When the model is wrong in a steady way the predicted end drifts:
it *recedes* (the migration keeps needing more than the model says: a dirty rate that grows,
a link that slows) or *approaches* (the passes shrink faster than the model's arithmetic).
``EndDrift`` follows the predicted ends since the migration first measured its dirty rate
and fits their slope ``r`` (seconds of predicted end per second of job time). If the drift
goes on, the end is reached when ``t + e(t) = T`` with ``e`` falling at ``1 - r`` per
second: ``T - now = eta / (1 - r)``. The slope is only trusted once it spans
``min_span_s`` and is shrunk towards 0 by how much of that span it has, and clamped, so a
single jump at a pass boundary (new evidence, not drift) does not swing the ETA.

Invariants: the corrected ETA is never negative, and equals the model's when there is no
drift or too little history.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Drift:
    """The fitted drift of the predicted end and the ETA it implies."""

    slope: float  # seconds of predicted end per second of job time (shrunk, clamped)
    eta: float  # the model's ETA corrected for the drift

    @property
    def receding(self) -> bool:
        return self.slope > 0.0


class EndDrift:
    """Predicted ends of one migration, and their drift (see the module docstring)."""

    def __init__(
        self, *, window_s: float = 20.0, min_span_s: float = 4.0, max_slope: float = 0.5
    ) -> None:
        self._window_s = window_s
        self._min_span_s = min_span_s
        self._max_slope = max_slope
        self._points: deque[tuple[float, float]] = deque()  # (elapsed, predicted end)

    def reset(self) -> None:
        """Forget the history (the situation changed: a new limit, post-copy)."""
        self._points.clear()

    def add(self, elapsed_s: float, eta_s: float) -> Drift:
        """Take the model's ETA at ``elapsed_s``; returns the drift and corrected ETA."""
        self._points.append((elapsed_s, elapsed_s + max(eta_s, 0.0)))
        while self._points and self._points[0][0] < elapsed_s - self._window_s:
            self._points.popleft()
        slope = self._slope()
        eta = max(eta_s, 0.0) / (1.0 - slope)
        return Drift(slope, eta)

    def _slope(self) -> float:
        pts = self._points
        if len(pts) < 3:
            return 0.0
        span = pts[-1][0] - pts[0][0]
        if span < self._min_span_s:
            return 0.0
        n = len(pts)
        mt = sum(t for t, _ in pts) / n
        me = sum(e for _, e in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        if var <= 0:
            return 0.0
        raw = sum((t - mt) * (e - me) for t, e in pts) / var
        trust = min(span / (2.0 * self._min_span_s), 1.0)
        return max(min(raw * trust, self._max_slope), -self._max_slope)
