"""The switch-over lottery: a remaining that hovers just above the switch-over point. Pure.

QEMU stops the guest at the first bitmap sync that leaves less than ``bandwidth x
max_downtime`` to send. A guest whose hot set re-dirties about that much in a pass (a
stressor over 48 MiB at 120 MiB/s with a 36 MiB threshold) makes passes of a tenth of a
second whose remaining hovers at 35-50 MiB: each sync is a draw, and the migration ends at
the first lucky one. Recorded: 240 passes over 25 s. The pass model, seeing each pass leave
a little over the threshold, says "one more pass" (0.1 s) the whole time; so does the naive
remaining / rate.

Nothing in the job stats says how likely a draw is, only how long the draws have failed.
For an event of unknown, constant rate that has not happened in ``S`` seconds, the median
wait for it under a scale-free prior is ``S`` more (the predictive survival is ``S / (S +
t)``), and its 90th percentile ``9 S``. That is the ETA while the hovering lasts: honest
about the luck, and it grows with the wait instead of promising the next pass again. A
final burst of a converging run hovers only briefly, and then this says little.
"""

from __future__ import annotations

from collections.abc import Sequence

from migwatch.agent.estimate.etaband import EtaBand
from migwatch.agent.estimate.etaconfig import EstimatorConfig

__all__ = ["hovering_since", "lottery_band"]


def hovering_since(
    times: Sequence[float],
    iterations: Sequence[int],
    max_downtime_s: float,
    cfg: EstimatorConfig,
) -> float | None:
    """The job time since which the passes have been short: at most ``stall_margin x
    max_downtime_s`` each, which is what leaving at most ``stall_margin`` times the
    switch-over threshold means at the bandwidth, over at least ``pass_window`` passes;
    ``None`` when they are not. Passes of a tenth of a second end several to a sample and
    only the last one's start is seen, so each stretch between two seen starts counts by
    its average pass (and the remaining seen at a sample is not a boundary's)."""
    if max_downtime_s <= 0 or len(times) != len(iterations) or len(times) < 2:
        return None
    limit = cfg.stall_margin * max_downtime_s
    last = len(times) - 1
    start: int | None = None
    for k in range(last - 1, -1, -1):
        passes = iterations[k + 1] - iterations[k]
        if passes <= 0 or (times[k + 1] - times[k]) / passes > limit:
            break
        start = k
    if start is None or iterations[last] - iterations[start] < cfg.pass_window:
        return None
    return times[start]


def lottery_band(eta: EtaBand, span_s: float) -> EtaBand:
    """The band of a migration that has hovered for ``span_s`` s: the central ETA the median
    wait (``span_s`` more, at least the plan's), the fast edge the plan's (the next sync may
    be the lucky one), the slow edge the 90th percentile (``9 x span_s``)."""
    if eta.eta is None or span_s <= 0:
        return eta
    central = max(eta.eta, span_s)
    high = max(eta.high if eta.high is not None else 0.0, 9.0 * span_s, central)
    return EtaBand(eta.plan, central, eta.low, high)
