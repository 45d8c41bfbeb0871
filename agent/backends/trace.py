"""Read a recorded migration trace (``bench/traces/TRACE_FORMAT.md``) into typed records.

A trace is JSON Lines: ``meta``, ``stats``, ``dirtyrate``, ``event``, ``action`` and
``result`` lines in time order. Unknown keys and unknown line types are ignored (the format
grows); a line that is not a JSON object, or a known line whose required keys have the
wrong type, raises ``TraceError`` naming the file and line number.

Beyond parsing, this module answers what replay and the benchmark both need:
``true_duration_s`` (the completed job's ``time_elapsed``), ``limits_at`` (the tunables in
force at a moment: bandwidth from the migrate params / ``speed`` actions, max downtime
0.3 s or ``downtime`` actions, post-copy allowed from the flags), ``preflight_of`` (the
``dirtyrate`` lines as a ``Preflight``), ``resident_of`` (the ``memstats`` line's ``rss``) and ``source_steps`` (the source's running samples
in order, each with its limits and whether post-copy was started).

``meta.guest`` describes the lab's workload for people: it is kept in ``TraceMeta.raw``
but nothing here derives limits or estimates from it.

Exceptions::

    ValueError
     └── TraceError   a malformed trace line (file:line in the message)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from migwatch.agent.backends.jobstats import completed_job, is_running, parse_job_stats
from migwatch.agent.model import MIB, JobSample, Limits, Preflight

DEFAULT_MAX_DOWNTIME_S = 0.3  # libvirt/QEMU default when no `downtime` action ran


class TraceError(ValueError):
    """A trace file that cannot be read: the message starts with ``path:line:``."""


@dataclass(frozen=True, slots=True)
class TraceMeta:
    """The ``meta`` line: how the migration was started."""

    t: float
    scenario: str
    bandwidth_bps: int | None  # the migrate call's `bandwidth` param (MiB/s) in B/s
    postcopy_bandwidth_bps: int | None  # `bandwidth.postcopy`, B/s
    flag_names: tuple[str, ...]
    params: Mapping[str, object]
    interval_s: float | None
    preflight: bool
    dom_uuid: str
    raw: Mapping[str, object]  # the whole line, for people (includes `guest`)


@dataclass(frozen=True, slots=True)
class SourceStats:
    """A ``stats`` line from the source: libvirt's dict, parsed, or the call's error."""

    t: float
    dt: float | None
    job_type: str | None
    stats: Mapping[str, object] | None
    sample: JobSample | None  # None for no job, an error, or a non-running job
    running: bool  # job type BOUNDED/UNBOUNDED
    error: str | None


@dataclass(frozen=True, slots=True)
class DestStats:
    """A ``stats`` line from the destination: its domain state or libvirt's refusal."""

    t: float
    dt: float | None
    state: tuple[int, int] | None
    error: str | None
    code: int | None


@dataclass(frozen=True, slots=True)
class DirtyRate:
    """A pre-flight dirty-rate measurement (``dirtyrate`` line)."""

    t: float
    period_s: float
    megabytes_per_second: float
    calc_status: int | None
    mode: str


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """A libvirt domain event from either host."""

    t: float
    dt: float | None
    host: str
    event: str
    lifecycle: str | None = None
    detail: str | None = None
    iteration: int | None = None
    params: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class TraceAction:
    """Something done to the running migration (abort, postcopy, downtime, speed)."""

    t: float
    dt: float | None
    action: str
    arg: object
    ok: bool


@dataclass(frozen=True, slots=True)
class TraceResult:
    """The ``result`` line: how the migrate call ended and the completed stats."""

    t: float
    outcome: str
    error_message: str | None
    duration_s: float | None
    src_completed: Mapping[str, object]
    dst_completed: Mapping[str, object]
    job_completed_event: Mapping[str, Mapping[str, object]]


@dataclass(frozen=True, slots=True)
class MemStats:
    """A ``memstats`` line: ``virDomainMemoryStats()`` of the guest on the source (KiB)."""

    t: float
    dt: float | None
    rss_kib: int | None
    stats: Mapping[str, object]


Record = (SourceStats | DestStats | DirtyRate | TraceEvent | TraceAction | TraceResult
          | MemStats)


@dataclass(frozen=True, slots=True)
class Trace:
    """One recorded migration: its meta line and every other record in file order."""

    path: str
    meta: TraceMeta | None
    records: tuple[Record, ...]

    @property
    def name(self) -> str:
        return Path(self.path).stem

    @property
    def source_stats(self) -> tuple[SourceStats, ...]:
        return tuple(r for r in self.records if isinstance(r, SourceStats))

    @property
    def dirtyrates(self) -> tuple[DirtyRate, ...]:
        return tuple(r for r in self.records if isinstance(r, DirtyRate))

    @property
    def events(self) -> tuple[TraceEvent, ...]:
        return tuple(r for r in self.records if isinstance(r, TraceEvent))

    @property
    def actions(self) -> tuple[TraceAction, ...]:
        return tuple(r for r in self.records if isinstance(r, TraceAction))

    @property
    def result(self) -> TraceResult | None:
        for r in reversed(self.records):
            if isinstance(r, TraceResult):
                return r
        return None


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """One running source sample with the limits in force and the post-copy state."""

    t: float
    dt: float | None
    sample: JobSample
    limits: Limits
    postcopy: bool  # migrateStartPostCopy() had succeeded before this sample
    stats: Mapping[str, object]


# --- parsing -------------------------------------------------------------------------


class _LineError(Exception):
    """Internal: a field problem, re-raised as TraceError with file:line."""


def _num(d: Mapping[str, object], key: str, *, optional: bool = False) -> float | None:
    value = d.get(key)
    if value is None:
        if optional:
            return None
        raise _LineError(f"missing number {key!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _LineError(f"{key!r} is not a number: {value!r}")
    return float(value)


def _req_num(d: Mapping[str, object], key: str) -> float:
    value = _num(d, key)
    assert value is not None  # _num raises unless optional
    return value


def _str(d: Mapping[str, object], key: str, *, optional: bool = False) -> str | None:
    value = d.get(key)
    if value is None:
        if optional:
            return None
        raise _LineError(f"missing string {key!r}")
    if not isinstance(value, str):
        raise _LineError(f"{key!r} is not a string: {value!r}")
    return value


def _mapping(d: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _LineError(f"{key!r} is not an object: {value!r}")
    return value


def _opt_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _mib_param(params: Mapping[str, object], key: str) -> int | None:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return int(value * MIB)


def _parse_meta(d: Mapping[str, object]) -> TraceMeta:
    params = _mapping(d, "params")
    bandwidth = _mib_param(params, "bandwidth")
    if bandwidth is None:
        bandwidth = _mib_param(d, "bandwidth_mib_s")
    flags = d.get("flag_names", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise _LineError("'flag_names' is not a list of strings")
    return TraceMeta(
        t=_req_num(d, "t"),
        scenario=_str(d, "scenario", optional=True) or "",
        bandwidth_bps=bandwidth,
        postcopy_bandwidth_bps=_mib_param(params, "bandwidth.postcopy"),
        flag_names=tuple(flags),
        params=params,
        interval_s=_num(d, "interval_s", optional=True),
        preflight=d.get("preflight") is True,
        dom_uuid=_str(d, "dom_uuid", optional=True) or "",
        raw=d,
    )


def _parse_stats(d: Mapping[str, object]) -> SourceStats | DestStats:
    t = _req_num(d, "t")
    dt = _num(d, "dt", optional=True)
    role = _str(d, "role", optional=True)
    if role is None:
        role = "src" if d.get("host") == "A" else "dst"
    if role == "dst":
        state_raw = d.get("state")
        state: tuple[int, int] | None = None
        if isinstance(state_raw, list) and len(state_raw) == 2:
            a, b = _opt_int(state_raw[0]), _opt_int(state_raw[1])
            if a is not None and b is not None:
                state = (a, b)
        return DestStats(
            t=t, dt=dt, state=state, error=_str(d, "error", optional=True),
            code=_opt_int(d.get("code")),
        )
    stats_raw = d.get("stats")
    if stats_raw is not None and not isinstance(stats_raw, dict):
        raise _LineError(f"'stats' is not an object: {stats_raw!r}")
    stats: Mapping[str, object] | None = stats_raw
    running = stats is not None and is_running(stats)
    return SourceStats(
        t=t,
        dt=dt,
        job_type=_str(d, "job_type", optional=True),
        stats=stats,
        sample=parse_job_stats(stats) if stats is not None and running else None,
        running=running,
        error=_str(d, "error", optional=True),
    )


def _parse_event(d: Mapping[str, object]) -> TraceEvent:
    params = d.get("params")
    return TraceEvent(
        t=_req_num(d, "t"),
        dt=_num(d, "dt", optional=True),
        host=_str(d, "host", optional=True) or "",
        event=_str(d, "event") or "",
        lifecycle=_str(d, "lifecycle", optional=True),
        detail=_str(d, "detail", optional=True),
        iteration=_opt_int(d.get("iteration")),
        params=params if isinstance(params, dict) else None,
    )


def _parse_result(d: Mapping[str, object]) -> TraceResult:
    error = d.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    jce_raw = _mapping(d, "job_completed_event")
    jce = {k: v for k, v in jce_raw.items() if isinstance(v, dict)}
    return TraceResult(
        t=_req_num(d, "t"),
        outcome=_str(d, "outcome") or "",
        error_message=message if isinstance(message, str) else None,
        duration_s=_num(d, "duration_s", optional=True),
        src_completed=_mapping(d, "src_completed"),
        dst_completed=_mapping(d, "dst_completed"),
        job_completed_event=jce,
    )


def _parse_line(d: Mapping[str, object]) -> TraceMeta | Record | None:
    kind = d.get("type")
    if kind == "meta":
        return _parse_meta(d)
    if kind == "stats":
        return _parse_stats(d)
    if kind == "dirtyrate":
        return DirtyRate(
            t=_req_num(d, "t"),
            period_s=_req_num(d, "period_s"),
            megabytes_per_second=_req_num(d, "megabytes_per_second"),
            calc_status=_opt_int(d.get("calc_status")),
            mode=_str(d, "mode", optional=True) or "",
        )
    if kind == "event":
        return _parse_event(d)
    if kind == "action":
        return TraceAction(
            t=_req_num(d, "t"),
            dt=_num(d, "dt", optional=True),
            action=_str(d, "action") or "",
            arg=d.get("arg"),
            ok=d.get("result") == "ok",
        )
    if kind == "result":
        return _parse_result(d)
    if kind == "memstats":
        mstats = _mapping(d, "stats")
        return MemStats(t=_req_num(d, "t"), dt=_num(d, "dt", optional=True),
                        rss_kib=_opt_int(mstats.get("rss")), stats=mstats)
    if not isinstance(kind, str):
        raise _LineError(f"'type' missing or not a string: {kind!r}")
    return None  # an unknown line type: the format grows, ignore it


def read_trace(path: str | Path) -> Trace:
    """Read one trace file. Raises ``TraceError`` (``path:line: what``) on a bad line
    and ``OSError`` if the file cannot be opened."""
    meta: TraceMeta | None = None
    records: list[Record] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{path}:{lineno}: not JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise TraceError(f"{path}:{lineno}: not a JSON object")
            try:
                parsed = _parse_line(obj)
            except _LineError as exc:
                raise TraceError(f"{path}:{lineno}: {exc}") from exc
            if isinstance(parsed, TraceMeta):
                meta = parsed
            elif parsed is not None:
                records.append(parsed)
    return Trace(path=str(path), meta=meta, records=tuple(records))


# --- what replay and the benchmark need ----------------------------------------------


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
    ``dt``. Post-copy is allowed when the flags include ``VIR_MIGRATE_POSTCOPY``."""
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


def find_traces(*dirs: str | Path) -> list[Path]:
    """Every ``*.jsonl`` file in the given directories (missing ones skipped), sorted."""
    found: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.is_dir():
            found.extend(sorted(p.glob("*.jsonl")))
    return found
