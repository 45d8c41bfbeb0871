"""Record one live migration as a trace (JSON Lines, bench/traces/TRACE_FORMAT.md).

While the migration runs: `jobStats()` on A every `interval_s`, `state()` and
`jobStats()` on B, and LIFECYCLE / MIGRATION_ITERATION / JOB_COMPLETED events
from both daemons through libvirtaio. Optionally, before the migration,
libvirt's own dirty-rate measurement (page-sampling mode only: dirty-bitmap
mode killed the guest's QEMU here) with periods 1, 2 and 4 s.

Every blocking libvirt call runs in a thread (`asyncio.to_thread`): jobStats is
~1 ms but was seen to take ~1 s, and the source's blocks 1.2-2.3 s after the
switch-over. All connections are opened and closed on the event loop thread,
and torn down in the order Pitfall 10 requires.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import libvirt
import libvirtaio
from migwatch.agent.backends.jobstats import job_type_name

from lab.guest import WorkloadSpec, dirtier_tail
from lab.hosts import HOSTS, LabError
from lab.labctl import (
    Lab,
    add_guest_args,
    add_migration_args,
    guest_spec,
    migration_spec,
    print_json,
)
from lab.migrate import Action, ActionRecord, flag_names
from lab.scenarios import SETS, Scenario

# ---------------------------------------------------------------------- names


def _constant_names(prefix: str) -> dict[int, str]:
    """libvirt constants by value, e.g. VIR_DOMAIN_JOB_OPERATION_ -> {5: "MIGRATION_OUT"}."""
    return {
        getattr(libvirt, n): n[len(prefix) :]
        for n in dir(libvirt)
        if n.startswith(prefix) and not n.endswith("_LAST")
    }


JOB_OPERATIONS = _constant_names("VIR_DOMAIN_JOB_OPERATION_")
LIFECYCLE_EVENTS = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "DEFINED",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "UNDEFINED",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "STARTED",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "SUSPENDED",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "RESUMED",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "STOPPED",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "SHUTDOWN",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "PMSUSPENDED",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "CRASHED",
}
# Detail names per lifecycle event, e.g. SUSPENDED -> {1: "MIGRATED", 7: "POSTCOPY"}.
LIFECYCLE_DETAILS = {
    event: _constant_names(f"VIR_DOMAIN_EVENT_{name}_") for event, name in LIFECYCLE_EVENTS.items()
}


# ---------------------------------------------------------------------- writer


class TraceWriter:
    """Writes trace lines; thread-safe (actions are reported from a thread)."""

    def __init__(self, fh: TextIO) -> None:
        self._fh = fh
        self._lock = threading.Lock()
        self.t0: float | None = None  # the migrate call; dt is null before it

    def write(self, line_type: str, t: float | None = None, **fields: Any) -> None:
        t = time.time() if t is None else t
        dt = None if self.t0 is None else round(t - self.t0, 4)
        line = {"t": round(t, 4), "dt": dt, "type": line_type, **fields}
        with self._lock:
            self._fh.write(json.dumps(line) + "\n")
            self._fh.flush()


# ---------------------------------------------------------------------- sampling


@dataclass
class CallTimes:
    ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int] | None:
        if not self.ms:
            return None
        return {
            "n": len(self.ms),
            "mean_ms": round(statistics.fmean(self.ms), 3),
            "p50_ms": round(statistics.median(self.ms), 3),
            "max_ms": round(max(self.ms), 3),
        }


def _stats_fields(stats: dict[str, Any], call_ms: float) -> dict[str, Any]:
    op = stats.get("operation")
    return {
        "call_ms": round(call_ms, 3),
        "job_type": job_type_name(stats.get("type", 0)),
        "operation": JOB_OPERATIONS.get(op) if op is not None else None,
        "stats": stats,
    }


def _error_fields(err: libvirt.libvirtError) -> dict[str, Any]:
    return {"error": str(err), "code": err.get_error_code()}


class Sampler:
    """jobStats() on the source, state() + jobStats() on the destination."""

    def __init__(self, conns: dict[str, Any], uuid: str) -> None:
        self._conns = conns
        self._uuid = uuid
        self._doms: dict[str, Any] = {}
        self.src_calls = CallTimes()
        self.dst_calls = CallTimes()

    def _dom(self, host: str) -> Any:
        if host not in self._doms:
            self._doms[host] = self._conns[host].lookupByUUIDString(self._uuid)
        return self._doms[host]

    def source(self) -> dict[str, Any]:
        try:
            dom = self._dom("A")
            start = time.monotonic()
            stats = dom.jobStats()
            call_ms = (time.monotonic() - start) * 1000
        except libvirt.libvirtError as err:
            return {"host": "A", "role": "src", **_error_fields(err)}
        self.src_calls.ms.append(call_ms)
        return {"host": "A", "role": "src", **_stats_fields(stats, call_ms)}

    def destination(self) -> dict[str, Any]:
        line: dict[str, Any] = {"host": "B", "role": "dst"}
        try:
            dom = self._dom("B")
            line["state"] = list(dom.state())
            start = time.monotonic()
            stats = dom.jobStats()
            call_ms = (time.monotonic() - start) * 1000
        except libvirt.libvirtError as err:
            return {**line, **_error_fields(err)}
        self.dst_calls.ms.append(call_ms)
        return {**line, **_stats_fields(stats, call_ms)}

    def close(self) -> None:
        self._doms.clear()  # domain objects keep their connection alive


def completed_stats(conn: Any, uuid: str) -> dict[str, Any]:
    """jobStats(COMPLETED) of a host, or {"error": ...} (e.g. a transient source gone)."""
    try:
        dom = conn.lookupByUUIDString(uuid)
        stats: dict[str, Any] = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        return stats
    except libvirt.libvirtError as err:
        return {"error": str(err)}


def domain_after(conn: Any, uuid: str) -> dict[str, Any] | None:
    try:
        dom = conn.lookupByUUIDString(uuid)
        state, reason = dom.state()
        return {"state": state, "reason": reason, "active": bool(dom.isActive())}
    except libvirt.libvirtError:
        return None


def read_memory_stats(conn: Any, uuid: str) -> dict[str, Any]:
    """One ``virDomainMemoryStats()`` of the guest on the source, as a ``memstats`` line
    (``stats``: libvirt's dict in KiB, e.g. ``rss``; ``error`` if the call failed)."""
    start = time.monotonic()
    try:
        dom = conn.lookupByUUIDString(uuid)
        stats = {str(k): int(v) for k, v in dom.memoryStats().items()}
        del dom
    except libvirt.libvirtError as err:
        return {"host": "A", **_error_fields(err)}
    return {"host": "A", "stats": stats, "call_ms": round((time.monotonic() - start) * 1000, 3)}


def measure_dirty_rate(conn: Any, uuid: str, period_s: int) -> dict[str, Any]:
    """libvirt's page-sampling dirty-rate calculation over `period_s` seconds.

    NEVER dirty-bitmap mode: it killed the guest's QEMU on these machines. A
    new result is told from the previous one by its calc_start_time.
    """
    dom = conn.lookupByUUIDString(uuid)

    def read() -> dict[str, Any]:
        stats: dict[str, Any] = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)[
            0
        ][1]
        return stats

    previous_start = read().get("dirtyrate.calc_start_time")
    start = time.monotonic()
    dom.startDirtyRateCalc(period_s, getattr(libvirt, "VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING", 0))
    time.sleep(period_s)
    while True:
        stats = read()
        if (
            stats.get("dirtyrate.calc_status") == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED
            and stats.get("dirtyrate.calc_start_time") != previous_start
        ):
            break
        if time.monotonic() - start > period_s + 15:
            raise TimeoutError(f"dirty-rate calculation ({period_s} s) did not finish: {stats}")
        time.sleep(0.02)
    return {
        "host": "A",
        "mode": "page-sampling",
        "period_s": period_s,
        "megabytes_per_second": stats.get("dirtyrate.megabytes_per_second"),
        "calc_status": stats.get("dirtyrate.calc_status"),
        "took_s": round(time.monotonic() - start, 3),
    }


# ---------------------------------------------------------------------- events


class EventListener:
    """LIFECYCLE / MIGRATION_ITERATION / JOB_COMPLETED from both hosts."""

    def __init__(self, conns: dict[str, Any], writer: TraceWriter, name: str) -> None:
        self._conns = conns
        self._writer = writer
        # Only this guest's events: other users of the lab may run guests too.
        self._name = name
        self._ids: list[tuple[str, int]] = []
        self.seen: set[str] = set()
        self.job_completed: dict[str, dict[str, Any]] = {}

    def register(self) -> None:
        for host, conn in self._conns.items():
            for event_id, cb in (
                (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
                (libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self._iteration),
                (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._job_completed),
            ):
                self._ids.append((host, conn.domainEventRegisterAny(None, event_id, cb, host)))

    def deregister(self) -> None:
        for host, cb_id in self._ids:
            try:
                self._conns[host].domainEventDeregisterAny(cb_id)
            except libvirt.libvirtError:
                pass
        self._ids.clear()

    def _emit(self, host: str, event: str, dom: Any, **fields: Any) -> None:
        if dom.name() != self._name:
            return
        self.seen.add(event)
        self._writer.write("event", host=host, event=event, dom=dom.name(), **fields)

    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, host: str) -> None:
        self._emit(
            host,
            "LIFECYCLE",
            dom,
            lifecycle=LIFECYCLE_EVENTS.get(event, str(event)),
            detail=LIFECYCLE_DETAILS.get(event, {}).get(detail, str(detail)),
            raw=[event, detail],
        )

    def _iteration(self, conn: Any, dom: Any, iteration: int, host: str) -> None:
        self._emit(host, "MIGRATION_ITERATION", dom, iteration=iteration)

    def _job_completed(self, conn: Any, dom: Any, params: dict[str, Any], host: str) -> None:
        if dom.name() == self._name:
            self.job_completed[host] = params
        self._emit(host, "JOB_COMPLETED", dom, params=params)


# ---------------------------------------------------------------------- recorder


_impl: Any = None


def _event_impl() -> Any:
    """Register libvirtaio once per process, on the running loop, before any
    libvirt.open (libvirt keeps the first registered implementation)."""
    global _impl
    loop = asyncio.get_running_loop()
    if _impl is None:
        _impl = libvirtaio.virEventRegisterAsyncIOImpl(loop)
    elif _impl.loop is not loop:
        raise RuntimeError("libvirtaio is bound to another event loop; record in one asyncio.run")
    return _impl


def _meta(sc: Scenario, uuid: str, boot_s: float, conns: dict[str, Any]) -> dict[str, Any]:
    mig = sc.migration
    flags = mig.flags()
    return {
        "scenario": sc.scenario,
        "guest": sc.guest.trace_dict(),
        "bandwidth_mib_s": mig.bandwidth_mib_s,
        "domain_type": "qemu",
        "accel": "tcg",
        "guest_cmdline": sc.guest.cmdline(),
        "flags": flags,
        "flag_names": flag_names(flags),
        "params": mig.params(),
        "dconnuri": mig.dconnuri,
        "actions": [a.as_list() for a in mig.actions],
        "interval_s": sc.interval_s,
        "boot_s": round(boot_s, 3),
        "dom_uuid": uuid,
        "label": sc.label,
        "settle_s": sc.settle_s,
        "timeout_s": sc.timeout_s,
        "disk_fill_mib": sc.guest.disk_fill_mib if sc.guest.disk_mib else None,
        "overrides": _overrides(sc),
        "rate_change": None,  # (shared-trace key: the lab never changes the rate mid-run)
        "preflight": sc.preflight,
        "preflight_periods_s": list(sc.preflight_periods_s) if sc.preflight else None,
        "note": sc.note or None,
        "libvirt_version": libvirt.getVersion(),
        "daemon_version": conns["A"].getLibVersion(),
        "qemu_version": conns["A"].getVersion(),
        "src_host": conns["A"].getHostname(),
        "dst_host": conns["B"].getHostname(),
    }


def _overrides(sc: Scenario) -> dict[str, int]:
    """The scenario's parameters under the shared traces' short names."""
    g = sc.guest
    out = {"mem": g.mem_mib, "hot": g.ws_mib, "fill": g.fill_mib, "rate": g.rate}
    if g.disk_mib:
        out |= {"disk_rate": g.disk_rate, "disk": g.disk_mib, "disk_fill": g.disk_fill_mib}
    return out | {"bandwidth": sc.migration.bandwidth_mib_s}


async def _sample_until_done(
    sc: Scenario, writer: TraceWriter, sampler: Sampler, handle: Any, lab: Lab
) -> None:
    """Sample both ends every interval until the migrate call returns, then
    once more; abort the job if it outlives the scenario's timeout."""
    assert writer.t0 is not None
    k = 0
    aborted_for_timeout = False
    while True:
        finished = handle.done()
        writer.write("stats", **await asyncio.to_thread(sampler.source))
        writer.write("stats", **await asyncio.to_thread(sampler.destination))
        if finished:
            return
        if not aborted_for_timeout and time.time() - writer.t0 > sc.timeout_s:
            aborted_for_timeout = True
            await asyncio.to_thread(_abort_for_timeout, sc, writer, lab, handle)
        k += 1
        next_at = writer.t0 + k * sc.interval_s
        while not handle.done() and time.time() < next_at:
            await asyncio.sleep(min(0.01, max(0.0, next_at - time.time())))


def _abort_for_timeout(sc: Scenario, writer: TraceWriter, lab: Lab, handle: Any) -> None:
    with lab._conn("A") as conn:
        start = time.monotonic()
        try:
            conn.lookupByUUIDString(handle.dom_uuid).abortJob()
            result = "ok"
        except libvirt.libvirtError as err:
            result = str(err)
    writer.write(
        "action",
        action="abort",
        arg="timeout",
        result=result,
        call_ms=round((time.monotonic() - start) * 1000, 3),
    )


async def record_one(sc: Scenario, out_dir: Path) -> dict[str, Any]:
    """Boot the guest on A, record its migration to B into <out_dir>/<label>.jsonl.
    Returns a summary (for INDEX.md and the caller's report)."""
    impl = _event_impl()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{sc.label}.jsonl"
    conns = {h: libvirt.open(spec.uri) for h, spec in HOSTS.items()}
    lab = Lab(conns)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as fh:
        writer = TraceWriter(fh)
        events = EventListener(conns, writer, sc.guest.name)
        sampler: Sampler | None = None
        try:
            await asyncio.to_thread(lab.destroy, sc.guest.name)
            events.register()
            boot_start = time.monotonic()
            uuid = await asyncio.to_thread(lab.boot, sc.guest, "A", sc.boot_timeout_s)
            boot_s = time.monotonic() - boot_start
            await asyncio.sleep(sc.settle_s)
            writer.write("meta", **_meta(sc, uuid, boot_s, conns))
            if sc.preflight:
                for period in sc.preflight_periods_s:
                    line = await asyncio.to_thread(measure_dirty_rate, conns["A"], uuid, period)
                    writer.write("dirtyrate", **line)
            # The source QEMU's resident memory just before the migrate call: an upper
            # bound on the guest RAM ever written (never-touched pages are not resident).
            writer.write("memstats", **await asyncio.to_thread(read_memory_stats, conns["A"], uuid))
            sampler = Sampler(conns, uuid)
            handle = lab.start(sc.migration, action_hook=_action_writer(writer))
            writer.t0 = handle.started_at
            await _sample_until_done(sc, writer, sampler, handle, lab)
            outcome = handle.wait()
            summary = await _finish(sc, writer, lab, conns, uuid, outcome, events, sampler)
        finally:
            events.deregister()
            if sampler is not None:
                sampler.close()
            await asyncio.to_thread(lab.destroy, sc.guest.name)
            del lab
            for conn in conns.values():
                conn.close()
            conns.clear()
            await impl.drain()
    tmp.replace(path)
    summary["file"] = str(path)
    return summary


def _action_writer(writer: TraceWriter) -> Callable[[ActionRecord], None]:
    def hook(rec: ActionRecord) -> None:
        writer.write(
            "action",
            t=rec.t,
            action=rec.action,
            arg=rec.arg,
            result=rec.result,
            call_ms=round(rec.call_ms, 3),
        )

    return hook


async def _finish(
    sc: Scenario,
    writer: TraceWriter,
    lab: Lab,
    conns: dict[str, Any],
    uuid: str,
    outcome: Any,
    events: EventListener,
    sampler: Sampler,
) -> dict[str, Any]:
    src_completed = await asyncio.to_thread(completed_stats, conns["A"], uuid)
    dst_completed = await asyncio.to_thread(completed_stats, conns["B"], uuid)
    after = {h: await asyncio.to_thread(domain_after, conns[h], uuid) for h in HOSTS}
    check_host = "B" if outcome.outcome == "completed" else "A"
    # A real program on a loaded machine can go 5-7 s between status lines (one vCPU,
    # TCG, flat out): give it time to show it still runs before calling it stuck.
    wait_s = 20.0 if isinstance(sc.guest, WorkloadSpec) else None
    check = await asyncio.to_thread(lab.guest_check, check_host, sc.guest.name, wait_s)
    result = {
        "outcome": outcome.outcome,
        "error": outcome.error,
        "duration_s": round(outcome.duration_s, 3),
        "src_completed": src_completed,
        "dst_completed": dst_completed,
        "job_completed_event": dict(events.job_completed),
        "domain_after": after,
        "guest_check": check.as_dict(),
        "events_seen": sorted(events.seen),
        "serial_tail": {h: dirtier_tail(h, sc.guest.name) for h in HOSTS},
        "jobstats_call": {"src": sampler.src_calls.summary(), "dst": sampler.dst_calls.summary()},
    }
    writer.write("result", **result)
    return {
        "label": sc.label,
        "outcome": outcome.outcome,
        "duration_s": round(outcome.duration_s, 3),
        "guest_check_ok": check.ok,
    }


async def record_many(scenarios: Sequence[Scenario], out_dir: Path) -> list[dict[str, Any]]:
    """Record scenarios one after another on one event loop (libvirtaio binds
    to the first loop it is registered on)."""
    summaries: list[dict[str, Any]] = []
    for sc in scenarios:
        start = time.monotonic()
        try:
            summary = await record_one(sc, out_dir)
        except (LabError, libvirt.libvirtError, TimeoutError) as err:
            # One guest that fails to boot or measure must not cost the rest of a long
            # set: say so (no trace is written for it) and go on.
            summary = {
                "label": sc.label,
                "outcome": "not recorded",
                "error": str(err),
                "guest_check_ok": False,
            }
        summary["wall_s"] = round(time.monotonic() - start, 1)
        print(json.dumps(summary), flush=True)
        summaries.append(summary)
    return summaries


def write_index(out_dir: Path) -> None:
    from lab.index import write_index as _write

    _write(out_dir)


# ---------------------------------------------------------------------- CLI


def _cmd_one(a: argparse.Namespace) -> int:
    scenario = Scenario(
        label=a.label,
        scenario=a.scenario,
        guest=guest_spec(a),
        migration=migration_spec(a),
        preflight=a.preflight,
        settle_s=a.settle,
        timeout_s=a.timeout,
    )
    summaries = asyncio.run(record_many([scenario], Path(a.out)))
    print_json(summaries)
    return 0


def _cmd_set(a: argparse.Namespace) -> int:
    chosen = [s for s in SETS[a.set] if not a.only or s.label in a.only]
    out = Path(a.out)
    summaries = asyncio.run(record_many(chosen, out))
    write_index(out)
    print_json(summaries)
    return 0 if all(s.get("guest_check_ok") for s in summaries) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lab.record one|set``: record traces on the lab (``make lab`` first)."""
    parser = argparse.ArgumentParser(prog="python -m lab.record", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("one", help="boot, migrate and record one trace (JSON Lines)")
    add_guest_args(p)
    add_migration_args(p)
    p.add_argument("--label", required=True, help="trace name (file <label>.jsonl)")
    p.add_argument("--scenario", default="converge", help="scenario kind for the meta line")
    p.add_argument("--preflight", action="store_true", help="dirty-rate measurements first")
    p.add_argument("--settle", type=float, default=2.0, help="s between boot and migration")
    p.add_argument("--timeout", type=float, default=120.0, help="abort the migration after s")
    p.add_argument("--out", default="bench/traces")
    p.set_defaults(fn=_cmd_one)
    p = sub.add_parser("set", help="record a scenario set of lab/scenarios.py + INDEX.md")
    p.add_argument("--out", default="bench/traces")
    p.add_argument(
        "--set",
        default="standard",
        choices=list(SETS),
        help="which scenario set (lab/scenarios.py; default standard)",
    )
    p.add_argument("--only", nargs="*", help="labels to record (default: all)")
    p.set_defaults(fn=_cmd_set)
    args = parser.parse_args(argv)
    try:
        rc: int = args.fn(args)
        return rc
    except LabError as err:
        print(f"lab.record: {err}", file=sys.stderr)
        return 2


__all__ = ["Action", "Scenario", "main", "record_many", "record_one", "write_index"]

if __name__ == "__main__":
    sys.exit(main())
