"""From a situation (what is left, how fast, the dirty model) to an ETA and its band. Pure.

The central ETA is the pass plan at the model's central values. The band's edges are the
plans at the edges of every input the agent is unsure of, all pushed the same way:

* fast edge: the low dirty rate, the transfer rate's upper wobble, and the optimistic
  share of never-written pages in what pass 1 has left;
* slow edge: the high dirty rate, the transfer rate's lower wobble, no zero pages ahead.

So the band is wide exactly where the inputs are weakest (pass 1 without a measurement, a
single live reading that may be capped, a pre-flight rate near the bandwidth) and narrows
as passes are measured. A slow edge that never converges leaves the band open above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from migwatch.agent.estimate.dirtyfit import DirtyModel
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.passmodel import AutoConverge, PassPlan, plan_passes


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything the ETA needs at one moment, job-clock based."""

    before_memory_s: float  # time still needed before memory starts (disk mirror)
    pass_left: float
    pass_elapsed: float
    drain: float  # central pass-1 drain factor (1.0 after pass 1)
    drain_fast: float  # optimistic drain (band's lower edge)
    bandwidth: float
    bandwidth_spread: float  # relative
    model: DirtyModel
    max_downtime_s: float
    elapsed_s: float
    # Pessimistic drain (band's upper edge): 1.0 (no zero pages ahead) unless a bound on
    # the never-written pages is known (resident memory).
    drain_slow: float = 1.0
    # QEMU is throttling the guest (auto-converge): the passes follow its throttle ladder.
    auto_converge: AutoConverge | None = None
    # The most the transfer rate may reach (band's fast edge): the bandwidth limit when the
    # migration sends well below it (the sender starved of CPU, not the link, sets the pace
    # now, and that can end at any time); None: the rate's own wobble.
    bandwidth_ceiling: float | None = None
    # The central plan counts at most this many more passes (``None``: no cap): see
    # ``EstimatorConfig.more_passes_factor``.
    pass_cap: int | None = None


@dataclass(frozen=True, slots=True)
class EtaBand:
    """The central plan and the ETA with its band (``None``: not known / unbounded)."""

    plan: PassPlan
    eta: float | None
    low: float | None
    high: float | None


def plan_at(
    sit: Situation,
    cfg: EstimatorConfig,
    *,
    rate: float,
    hot: float | None,
    bandwidth: float,
    drain: float,
    fast: bool = False,
    slow: bool = False,
    pass_cap: int | None = None,
) -> PassPlan:
    """The pass plan of ``sit`` with these inputs. Under auto-converge (``AutoConverge``)
    the throttle slows the guest proportionally from now on at the band's fast edge
    (``fast``), only at the top of the ladder at its slow edge (``slow``), and from halfway
    up the rest of the ladder in the central plan."""
    ac = sit.auto_converge
    if ac is not None and fast:
        ac = replace(ac, proportional=True)
    elif ac is not None and not slow:
        ac = ac.mid_ladder()
    return plan_passes(
        pass_left_bytes=sit.pass_left,
        pass_elapsed_s=sit.pass_elapsed,
        bandwidth_bps=bandwidth,
        dirty_rate_bps=rate,
        hot_set_bytes=hot,
        max_downtime_s=sit.max_downtime_s,
        drain_factor=drain,
        check_interval_s=cfg.check_interval_s,
        horizon_s=cfg.budget_s * cfg.horizon_factor,
        auto_converge=ac,
        pass_cap=pass_cap,
        pass_cap_rho=cfg.more_passes_rho,
    )


def eta_band(sit: Situation, cfg: EstimatorConfig) -> EtaBand:
    """The central ETA and its band (see the module docstring)."""
    m = sit.model
    spread = sit.bandwidth_spread
    central = plan_at(
        sit,
        cfg,
        rate=m.rate,
        hot=m.hot,
        bandwidth=sit.bandwidth,
        drain=sit.drain,
        pass_cap=sit.pass_cap,
    )
    if not central.converges:
        return EtaBand(central, None, None, None)
    fast = plan_at(
        sit,
        cfg,
        rate=m.rate_low,
        hot=m.hot if m.hot is not None else m.hot_low or None,
        bandwidth=max(sit.bandwidth * (1.0 + spread), sit.bandwidth_ceiling or 0.0),
        drain=sit.drain_fast,
        fast=True,
    )
    doubt = m.slow_floor > 0
    slow = plan_at(
        sit,
        cfg,
        rate=max(m.rate_high, m.slow_floor),
        hot=None if doubt else m.hot,
        bandwidth=sit.bandwidth * max(1.0 - spread, 0.1),
        drain=sit.drain_slow,
        slow=True,
    )
    if not slow.converges and (not m.measured or doubt):
        # Nothing measured yet: the slow edge's assumed dirty rate (a share of the bandwidth)
        # is a guess, and so is its combination with the slowest wobble of the rate; the
        # band stays finite at the assumed rate over the rate seen (an open band is no band).
        slow = plan_at(
            sit,
            cfg,
            rate=max(m.rate_high, m.slow_floor),
            hot=None if doubt else m.hot,
            bandwidth=sit.bandwidth,
            drain=sit.drain_slow,
            slow=True,
        )
    eta = sit.before_memory_s + central.time_s
    margin = cfg.band_floor_s + cfg.band_floor_rel * eta
    low = min(sit.before_memory_s + fast.time_s, eta - margin)
    high = max(sit.before_memory_s + slow.time_s, eta + margin) if slow.converges else None
    return EtaBand(central, eta, max(low, 0.0), high)
