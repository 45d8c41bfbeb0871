"""Read a recorded migration trace (``bench/traces/TRACE_FORMAT.md``) into typed records.

A trace is JSON Lines: ``meta``, ``stats``, ``dirtyrate``, ``event``, ``action`` and
``result`` lines in time order. Unknown keys and unknown line types are ignored (the format
grows); a line that is not a JSON object, or a known line whose required keys have the
wrong type, raises ``TraceError`` naming the file and line number.

What replay and the benchmark derive from a trace (the limits in force at a moment, the
source's running steps, the true duration, the pre-flight) is ``tracefacts``.

``meta.guest`` describes the lab's workload for people: it is kept in ``TraceMeta.raw``
but nothing here derives limits or estimates from it.

Exceptions::

    ValueError
     └── TraceError   a malformed trace line (file:line in the message)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from migwatch.agent.backends.jobstats import is_running, parse_job_stats
from migwatch.agent.model import MIB, JobSample, Limits

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


Record = SourceStats | DestStats | DirtyRate | TraceEvent | TraceAction | TraceResult | MemStats


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
            t=t,
            dt=dt,
            state=state,
            error=_str(d, "error", optional=True),
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
        return MemStats(
            t=_req_num(d, "t"),
            dt=_num(d, "dt", optional=True),
            rss_kib=_opt_int(mstats.get("rss")),
            stats=mstats,
        )
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


def find_traces(*dirs: str | Path) -> list[Path]:
    """Every ``*.jsonl`` file in the given directories (missing ones skipped), sorted."""
    found: list[Path] = []
    for d in dirs:
        p = Path(d)
        if p.is_dir():
            found.extend(sorted(p.glob("*.jsonl")))
    return found
