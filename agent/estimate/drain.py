"""A drain of this host, from what the agent knows to the plan (``EstimateEvacuation``). Pure.

Each guest still to move is predicted as ``EstimateMigration`` would (``prediction``) with
the drain's bandwidth, max downtime and flags; each migration already in flight brings its
live ETA; ``evacuation.plan_evacuation`` schedules them. Calling it again mid-drain re-plans
from what is left: guests that left are no longer on the host, the ones moving are in
flight with their live ETA.

A guest is *left out* of the plan (``planned=False``, named in ``blocking``) when its
prediction has no duration: it would not converge under the drain's limits and flags. Its
entry carries the prediction's remedies. With ``post_copy`` the drain allows post-copy and
such a guest is planned with post-copy applied instead (``evacuation.post_copy_spread``).
Every duration in the plan is what the host waits for the guest's slot: the job's own clock
(``time_elapsed``, what the prediction and the live ETA are of) plus the teardown after it
(the source QEMU stopped, the migrate call returned), ``EstimatorConfig.migration_overhead_s``
as learned on this host (``overhead.TeardownTime``), its band's edges at 0.75x and 2x of it
(``with_overhead``). A drain of n guests one at a time pays it n times: on the lab (1.2-2.2 s per
guest, tests/test_lab_evacuation.py) it is about a tenth of the total.

A migration in flight without a live ETA yet (setup, its first samples) counts with its
pre-flight prediction less the time elapsed; one judged not converging or stalled is left
out the same way as an idle guest, with its live remedies.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.evacuation import (
    DEFAULT_BAND,
    BandConfig,
    Job,
    Plan,
    Spread,
    plan_evacuation,
    post_copy_spread,
    shared_bandwidth,
)
from migwatch.agent.estimate.prediction import predict_migration
from migwatch.agent.model import (
    MIB,
    Convergence,
    DomainFacts,
    EtaBasis,
    Migration,
    Recommendation,
)

#: The estimator's configuration for a guest, given the QEMU overhead and the teardown after
#: each job learned on its host (``Tracker.config_for``: the one place that merges them).
ConfigFor = Callable[[int | None, float | None], EstimatorConfig]


@dataclass(frozen=True, slots=True)
class DrainOptions:
    """How the guests will be migrated (``EstimateEvacuationRequest``, checked)."""

    concurrency: int = 1
    bandwidth_bps: int | None = None  # per migration; None: each guest's current max
    max_downtime_s: float | None = None  # None: each guest's current setting
    auto_converge: bool = False
    post_copy: bool = False
    link_bandwidth_bps: int | None = None  # one link shared by all; None: not shared
    order_given: bool = False  # keep the guests' order as given
    copy_storage: bool = False  # each migration copies the guest's disks first


@dataclass(frozen=True, slots=True)
class DrainEntry:
    """One guest of the drain: planned, in flight, or left out."""

    domain_uuid: str
    domain_name: str
    in_flight: bool
    planned: bool
    order: int  # start position from 1; 0 when in flight or left out
    start_s: float | None  # from now, at central durations; None when left out
    duration: Spread | None  # from its start (in flight: time left); None: would not finish
    convergence: Convergence
    reason: str
    recommendations: tuple[Recommendation, ...]
    basis: EtaBasis
    measurement_age_s: float | None  # None: never measured, or in flight
    bandwidth_bps: int
    post_copy_applied: bool = False


@dataclass(frozen=True, slots=True)
class DrainEstimate:
    """The plan for emptying the host, and what it leaned on."""

    total: Spread
    empties: bool
    entries: tuple[DrainEntry, ...]  # in flight, then planned in start order, then left out
    order: tuple[str, ...]  # names, in start order
    blocking: tuple[str, ...]  # names left out
    unmeasured: tuple[str, ...]  # names whose dirty rate was assumed
    oldest_measurement_age_s: float | None
    newest_measurement_age_s: float | None
    options: DrainOptions
    band_method: str


class NoBandwidth(ValueError):
    """Some guests have no bandwidth limit and the request gave no bandwidth to assume."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(
            f"{', '.join(names)} {'has' if len(names) == 1 else 'have'} no migration bandwidth"
            " limit, so there is no rate to predict with: pass bandwidth (per migration) or"
            " link_bandwidth (shared), in bytes per second"
        )
        self.names = tuple(names)


def guest_bandwidth(facts: DomainFacts, options: DrainOptions) -> int | None:
    """The bandwidth one guest's migration is assumed to get, or None when nothing says."""
    own = options.bandwidth_bps or facts.limits.max_bandwidth_bps or options.link_bandwidth_bps
    if own is None:
        return None
    return shared_bandwidth(own, options.link_bandwidth_bps, options.concurrency)


def with_overhead(spread: Spread, overhead_s: float) -> Spread:
    """A job-time ``spread`` plus the migration's fixed cost outside the job's clock
    (``EstimatorConfig.migration_overhead_s``: teardown until the migrate call returns),
    its edges at 0.75x and 2x of it."""
    o = max(overhead_s, 0.0)
    return Spread(spread.central + o, spread.low + 0.75 * o, spread.high + 2.0 * o)


def _spread(central: float | None, low: float | None, high: float | None) -> Spread | None:
    """A duration band from possibly-missing edges: a missing high edge is open above."""
    if central is None:
        return None
    central = max(central, 0.0)
    lo = min(max(low if low is not None else central, 0.0), central)
    hi = max(high if high is not None else math.inf, central)
    return Spread(central, lo, hi)


@dataclass(frozen=True, slots=True)
class _Guest:
    job: Job
    entry: DrainEntry  # start fields filled in once planned


def _predict_guest(
    facts: DomainFacts, bandwidth: int, options: DrainOptions, config_for: ConfigFor, now: float
) -> _Guest:
    limits = replace(
        facts.limits,
        max_bandwidth_bps=bandwidth,
        postcopy_allowed=facts.limits.postcopy_allowed or options.post_copy,
    )
    if options.max_downtime_s is not None:
        limits = replace(limits, max_downtime_s=options.max_downtime_s)
    config = config_for(facts.resident_overhead_bytes, facts.migration_overhead_s)
    disk = facts.disk_bytes if options.copy_storage else 0
    prediction = predict_migration(
        facts.memory_bytes,
        disk,
        facts.preflight,
        limits,
        config,
        resident_bytes=facts.resident_bytes,
        free_bytes=facts.free_bytes,
        auto_converge=options.auto_converge,
    )
    est = prediction.estimate
    spread = _spread(est.eta_s, est.eta_low_s, est.eta_high_s)
    reason = est.reason
    if disk:
        reason += (
            f"; its disks first: {disk / MIB:.0f} MiB, ~{disk / bandwidth:.0f} s at the bandwidth"
        )
    post_copy_applied = False
    if spread is None and options.post_copy:
        spread = post_copy_spread(float(facts.memory_bytes), prediction.hot_set_bytes, bandwidth)
        if disk:  # the disks are mirrored before the memory's first pass
            d = disk / bandwidth
            spread = Spread(spread.central + d, spread.low + d, spread.high + d)
        post_copy_applied = True
        reason += f"; planned with post-copy after the first pass: ~{spread.central:.0f} s"
    elif spread is None:
        reason += "; left out of the plan: it would not leave by itself"
    if spread is not None and config.migration_overhead_s > 0:
        spread = with_overhead(spread, config.migration_overhead_s)
        reason += f"; plus ~{config.migration_overhead_s:.1f} s of teardown after the job"
    measured = facts.preflight is not None and bool(facts.preflight.rates)
    age = now - facts.preflight.measured_at if measured and facts.preflight is not None else None
    entry = DrainEntry(
        domain_uuid=facts.domain_uuid,
        domain_name=facts.domain_name,
        in_flight=False,
        planned=spread is not None,
        order=0,
        start_s=None,
        duration=spread,
        convergence=est.convergence,
        reason=reason,
        recommendations=est.recommendations,
        basis=EtaBasis.PREFLIGHT if measured else EtaBasis.DEFAULT,
        measurement_age_s=None if age is None else max(age, 0.0),
        bandwidth_bps=bandwidth,
        post_copy_applied=post_copy_applied,
    )
    job = Job(facts.domain_uuid, facts.domain_name, spread)
    return _Guest(job, entry)


def _flying(
    m: Migration,
    facts: DomainFacts | None,
    options: DrainOptions,
    config_for: ConfigFor,
    now: float,
) -> tuple[Job, DrainEntry]:
    """A migration in flight: its live ETA; before it has one (setup, first samples, a disk
    mirror without a memory size), the guest's pre-flight prediction less the time elapsed.
    One judged not converging or stalled is left out, with its live remedies."""
    overhead_s = (
        config_for(facts.resident_overhead_bytes, facts.migration_overhead_s)
        if facts is not None
        else config_for(None, None)
    ).migration_overhead_s
    spread = _spread(m.eta_s, m.eta_low_s, m.eta_high_s)
    if spread is not None:
        spread = with_overhead(spread, overhead_s)  # the live ETA is of the job's clock
    reason = m.convergence_reason or "migrating"
    basis = m.eta_basis
    stuck = m.convergence in (Convergence.NOT_CONVERGING, Convergence.STALLED)
    bandwidth = m.limits.max_bandwidth_bps or (guest_bandwidth(facts, options) if facts else None)
    if spread is None and not stuck and facts is not None and bandwidth:
        # The migration runs with its own flags; only auto-converge is not in its limits.
        flags = replace(
            options, max_downtime_s=m.limits.max_downtime_s, post_copy=m.limits.postcopy_allowed
        )
        guess = _predict_guest(replace(facts, limits=m.limits), bandwidth, flags, config_for, now)
        elapsed = m.elapsed_s or 0.0
        if guess.job.spread is not None and not guess.entry.post_copy_applied:
            p = guess.job.spread
            spread = Spread(
                max(p.central - elapsed, 0.0), max(p.low - elapsed, 0.0), max(p.high - elapsed, 0.0)
            )
            basis = guess.entry.basis
            reason += (
                f"; no live ETA yet: its pre-flight prediction ({p.central:.0f} s)"
                f" less the {elapsed:.0f} s elapsed"
            )
    if spread is None:
        reason += "; no live ETA: left out of the plan until it has one or is acted on"
    entry = DrainEntry(
        domain_uuid=m.domain_uuid,
        domain_name=m.domain_name,
        in_flight=True,
        planned=spread is not None,
        order=0,
        start_s=0.0 if spread is not None else None,
        duration=spread,
        convergence=m.convergence,
        reason=reason,
        recommendations=m.recommendations,
        basis=basis,
        measurement_age_s=None,
        bandwidth_bps=bandwidth or 0,
    )
    return Job(m.domain_uuid, m.domain_name, spread, in_flight=True), entry


def estimate_drain(
    guests: Sequence[DomainFacts],
    in_flight: Sequence[Migration],
    options: DrainOptions,
    config_for: ConfigFor,
    now: float,
    rng: random.Random,
    band: BandConfig = DEFAULT_BAND,
) -> DrainEstimate:
    """The drain of ``guests`` (every guest to move, described; those in ``in_flight``, the
    live records of the migrations leaving now, are counted by their live ETA).

    Raises ``NoBandwidth`` when a guest has no bandwidth to predict with.
    """
    flying = {m.domain_uuid: m for m in in_flight}
    idle = [f for f in guests if f.domain_uuid not in flying]
    bandwidths = {f.domain_uuid: guest_bandwidth(f, options) for f in idle}
    missing = [f.domain_name for f in idle if bandwidths[f.domain_uuid] is None]
    if missing:
        raise NoBandwidth(missing)
    predicted = [
        _predict_guest(f, bandwidths[f.domain_uuid] or 0, options, config_for, now) for f in idle
    ]
    described = {f.domain_uuid: f for f in guests}
    flown = [_flying(m, described.get(m.domain_uuid), options, config_for, now) for m in in_flight]
    jobs = [job for job, _ in flown] + [g.job for g in predicted]
    plan = plan_evacuation(
        jobs, options.concurrency, rng, order_given=options.order_given, band=band
    )
    return _assemble(plan, [e for _, e in flown], [g.entry for g in predicted], options)


def _assemble(
    plan: Plan, flown: list[DrainEntry], guests: list[DrainEntry], options: DrainOptions
) -> DrainEstimate:
    slot = {p.key: p for p in plan.placed}
    by_uuid = {e.domain_uuid: e for e in guests}
    planned = [
        replace(by_uuid[k], order=slot[k].order, start_s=slot[k].start_s) for k in plan.order
    ]
    left_out = [e for e in guests if not e.planned]
    entries = (*flown, *planned, *left_out)
    ages = [e.measurement_age_s for e in guests if e.measurement_age_s is not None]
    return DrainEstimate(
        total=plan.total,
        empties=plan.empties,
        entries=entries,
        order=tuple(e.domain_name for e in planned),
        blocking=tuple(e.domain_name for e in entries if not e.planned),
        unmeasured=tuple(e.domain_name for e in guests if e.basis is EtaBasis.DEFAULT),
        oldest_measurement_age_s=max(ages, default=None),
        newest_measurement_age_s=min(ages, default=None),
        options=options,
        band_method=plan.band_method,
    )
