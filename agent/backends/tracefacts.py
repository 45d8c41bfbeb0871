"""What a recorded trace says, for replay and the benchmark alike. Pure.

``true_duration_s`` (the completed job's ``time_elapsed``), ``limits_at`` (the tunables in
force at a moment: bandwidth from the migrate params / ``speed`` actions, max downtime
0.3 s or ``downtime`` actions, post-copy allowed from the flags), ``preflight_of`` (the
``dirtyrate`` lines as a ``Preflight``), ``resident_of`` (the ``memstats`` line's ``rss``),
``memory_size_hint`` and ``source_steps`` (the source's running samples in order, each with
its limits and whether post-copy was started).

``meta.guest`` describes the lab's workload for people: nothing here derives limits or
estimates from it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from migwatch.agent.backends.jobstats import completed_job
from migwatch.agent.backends.trace import (
    DEFAULT_MAX_DOWNTIME_S,
    MemStats,
    ReplayStep,
    Trace,
)
from migwatch.agent.model import MIB, Limits, Preflight


def true_duration_s(trace: Trace) -> float | None:
    """The completed job's ``time_elapsed`` in seconds (switch-over), or ``None`` when the
    migration did not complete. Prefers the source's JOB_COMPLETED params, then the
    completed stats of the source and the destination."""
    result = trace.result
    candidates: list[Mapping[str, object]] = []
    for ev in trace.events:
        if ev.event == "JOB_COMPLETED" and ev.params is not None:
            candidates.append(ev.params)
    if result is not None:
        if result.outcome not in ("completed", ""):
            return None
        candidates.extend(result.job_completed_event.values())
        candidates.extend((result.src_completed, result.dst_completed))
    for stats in candidates:
        done = completed_job(stats)
        if done is not None and done.elapsed_s > 0:
            return float(done.elapsed_s)
    return None


def _action_value(arg: object) -> float | None:
    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
        return None
    return float(arg)


def limits_at(trace: Trace, dt: float | None) -> Limits:
    """The limits in force at ``dt`` seconds after the migrate call: the migrate call's
    bandwidth, then successful ``speed`` (MiB/s) and ``downtime`` (ms) actions up to
    ``dt``. Post-copy is allowed when the flags include ``VIR_MIGRATE_POSTCOPY``, and
    auto-converge is on when they include ``VIR_MIGRATE_AUTO_CONVERGE``: in a recording the
    migrate call's flags stand for the host's declared migration policy (an agent with
    ``--migration-policy`` matching what its control plane permits)."""
    meta = trace.meta
    bandwidth = meta.bandwidth_bps if meta else None
    downtime = DEFAULT_MAX_DOWNTIME_S
    for act in trace.actions:
        if not act.ok or act.dt is None or dt is None or act.dt > dt:
            continue
        value = _action_value(act.arg)
        if act.action == "speed" and value is not None:
            bandwidth = int(value * MIB) if value > 0 else None
        elif act.action == "downtime" and value is not None and value > 0:
            downtime = value / 1000.0
    return Limits(
        max_downtime_s=downtime,
        max_bandwidth_bps=bandwidth,
        postcopy_allowed=meta is not None and "VIR_MIGRATE_POSTCOPY" in meta.flag_names,
        postcopy_bandwidth_bps=meta.postcopy_bandwidth_bps if meta else None,
        auto_converge=meta is not None and "VIR_MIGRATE_AUTO_CONVERGE" in meta.flag_names,
    )


def postcopy_started_at(trace: Trace) -> float | None:
    """``dt`` of the first successful ``postcopy`` action, if any."""
    for act in trace.actions:
        if act.action == "postcopy" and act.ok and act.dt is not None:
            return act.dt
    return None


def preflight_of(trace: Trace) -> Preflight | None:
    """The trace's pre-flight dirty-rate readings (``calc_status`` 2 only), or ``None``."""
    rates: dict[float, float] = {}
    measured_at = 0.0
    for line in trace.dirtyrates:
        if line.calc_status not in (None, 2):
            continue
        rates[line.period_s] = line.megabytes_per_second
        measured_at = line.t
    if not rates:
        return None
    return Preflight(measured_at=measured_at, rates=rates)


def source_steps(trace: Trace) -> Iterator[ReplayStep]:
    """The source's running samples in file order, each with the limits in force and
    whether post-copy had been started. Errors and non-running job types (NONE before the
    job, CANCELLED after an abort) are skipped."""
    pc_at = postcopy_started_at(trace)
    for rec in trace.source_stats:
        if rec.sample is None or rec.stats is None:
            continue
        yield ReplayStep(
            t=rec.t,
            dt=rec.dt,
            sample=rec.sample,
            limits=limits_at(trace, rec.dt),
            postcopy=pc_at is not None and rec.dt is not None and rec.dt >= pc_at,
            stats=rec.stats,
        )


def resident_of(trace: Trace) -> int | None:
    """The source QEMU's resident memory in bytes (``memstats`` line, ``rss`` in KiB), taken
    before the migrate call by the lab recorder or when the agent found the job; ``None``
    when the trace has none (older traces)."""
    for rec in trace.records:
        if isinstance(rec, MemStats) and rec.rss_kib is not None and rec.rss_kib > 0:
            return rec.rss_kib * 1024
    return None


def free_of(trace: Trace) -> int | None:
    """The guest's free memory in bytes as the ``memstats`` line has it (balloon
    statistics ``unused``, KiB), read with ``rss``; ``None`` when the guest reports none (no
    balloon driver or no statistics period: every recording before rp4)."""
    for rec in trace.records:
        if isinstance(rec, MemStats):
            v = rec.stats.get("unused")
            if isinstance(v, int) and v > 0:
                return v * 1024
    return None


def memory_size_hint(trace: Trace) -> int | None:
    """The guest's RAM in bytes as the job stats first report it (``memory_total``).

    An agent knows this before the job from ``virDomainGetInfo``; a trace only records the
    job stats, so this is the stand-in for replay (needed during a disk mirror, when the
    memory counters are all zero).
    """
    for rec in trace.source_stats:
        if rec.sample is not None and rec.sample.memory_total > 0:
            return int(rec.sample.memory_total)
    return None
