"""The replay backend: recorded migrations (TRACE_FORMAT.md) played back in time.

The source host's samples and events are emitted with their original spacing,
divided by ``speed``. The estimator sees exactly what the live agent would
have: the samples (on the job's own clock, ``time_elapsed``), the limits in
force, post-copy, and the pre-flight ``dirtyrate`` lines — never the trace's
description of its workload. So replaying a trace gives the ETAs the
benchmark computes from it.

Wall times (``started_at``, ``updated_at``) are the replay's, so finished
migrations stay within the agent's retention and keep being served after
every trace has ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from migwatch.agent.backends.jobstats import completed_job, parse_job_stats
from migwatch.agent.backends.protocol import (
    Ending,
    MigrationInfo,
    Observation,
    ObservationSink,
    StatusSink,
)
from migwatch.agent.backends.trace import SourceStats, Trace, TraceEvent, TraceResult
from migwatch.agent.backends.tracefacts import (
    free_of,
    limits_at,
    memory_size_hint,
    postcopy_started_at,
    preflight_of,
    resident_of,
)
from migwatch.agent.errors import ControlRefused, MigrationGone
from migwatch.agent.model import (
    Direction,
    DomainFacts,
    HostState,
    JobSample,
    Limits,
    Phase,
    Preflight,
    running_phase,
)

log = logging.getLogger(__name__)

_OUTCOME = {"completed": Phase.COMPLETED, "failed": Phase.FAILED, "aborted": Phase.CANCELLED}


@dataclass(slots=True)
class _Replay:
    trace: Trace
    info: MigrationInfo
    preflight: Preflight | None
    phase: Phase = Phase.SETUP
    sample: JobSample | None = None
    limits: Limits = field(default_factory=Limits)
    done: bool = False


class ReplayBackend:
    """Plays every given trace at once, from the migrate call on."""

    def __init__(
        self,
        traces: list[Trace],
        *,
        speed: float = 1.0,
        host_name: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not traces:
            raise ValueError("the replay backend needs at least one trace")
        self._traces = traces
        self._speed = speed
        self._clock = clock
        first = traces[0].meta
        src = str(first.raw.get("src_host", "")) if first else ""
        self._host = host_name or f"replay-{src or 'host'}"
        self._replays: dict[str, _Replay] = {}

    @property
    def name(self) -> str:
        return "replay"

    @property
    def host(self) -> str:
        return self._host

    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        status(HostState.OK, "")
        start = self._clock()
        seen: set[str] = set()
        tasks = []
        for trace in self._traces:
            replay = self._prepare(trace, start, seen)
            self._replays[replay.info.domain_uuid] = replay
            tasks.append(asyncio.create_task(self._play(replay, observe, start)))
        try:
            await asyncio.gather(*tasks)
            log.info("all %d traces replayed; serving their final states", len(tasks))
            await asyncio.Event().wait()  # keep serving until cancelled
        finally:
            for task in tasks:
                task.cancel()

    def _prepare(self, trace: Trace, start: float, seen: set[str]) -> _Replay:
        meta = trace.meta
        raw = meta.raw if meta else {}
        guest = raw.get("guest")
        name = str(guest.get("name", "")) if isinstance(guest, dict) else ""
        domain_uuid = meta.dom_uuid if meta and meta.dom_uuid else ""
        if not domain_uuid or domain_uuid in seen:
            # Two recordings of one guest must stay two migrations.
            domain_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, str(Path(trace.path).resolve())))
        seen.add(domain_uuid)
        info = MigrationInfo(
            domain_uuid=domain_uuid,
            domain_name=name or trace.name,
            source_host=str(raw.get("src_host", "")) or self._host,
            destination_host=str(raw.get("dst_host", "")),
            direction=Direction.OUTGOING,
            started_at=start,
            memory_bytes=memory_size_hint(trace),
            resident_bytes=resident_of(trace),
            free_bytes=free_of(trace),
        )
        return _Replay(trace, info, preflight_of(trace), limits=limits_at(trace, 0.0))

    async def _play(self, replay: _Replay, observe: ObservationSink, start: float) -> None:
        trace = replay.trace
        # Time zero is the migrate call (dt = 0), not the meta line: pre-flight
        # measurements can sit seconds before it.
        t0 = next(
            (
                r.t - r.dt
                for r in trace.records
                if isinstance(r, SourceStats | TraceEvent) and r.dt is not None
            ),
            trace.meta.t if trace.meta else 0.0,
        )
        postcopy_at = postcopy_started_at(trace)
        for record in trace.records:
            dt = getattr(record, "dt", None)
            if isinstance(record, TraceResult):
                dt = record.t - t0
            if dt is None:
                continue  # boot events and pre-flight lines come before the migration
            delay = start + (record.t - t0) / self._speed - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if replay.done:
                return
            replay.limits = limits_at(trace, dt)
            if isinstance(record, SourceStats) and record.sample is not None and record.running:
                replay.sample = record.sample
                if postcopy_at is not None and dt >= postcopy_at:
                    replay.phase = Phase.POSTCOPY
                elif replay.phase is not Phase.PAUSED:
                    replay.phase = running_phase(record.sample)
                self._emit(replay, observe, record.sample)
            elif isinstance(record, TraceEvent) and record.host == "A":
                self._apply_event(replay, record, observe)
            elif isinstance(record, TraceResult):
                self._finish(replay, observe, _OUTCOME.get(record.outcome, Phase.FAILED), record)
        if not replay.done:
            log.warning("trace %s ends without a result line; left as it was", trace.path)

    def _apply_event(self, replay: _Replay, event: TraceEvent, observe: ObservationSink) -> None:
        if event.event == "LIFECYCLE" and event.lifecycle == "SUSPENDED":
            replay.phase = Phase.POSTCOPY if event.detail == "POSTCOPY" else Phase.PAUSED
            self._emit(replay, observe, None)
        elif event.event == "JOB_COMPLETED" and event.params is not None:
            self._finish(replay, observe, Phase.COMPLETED, None, dict(event.params))

    def _finish(
        self,
        replay: _Replay,
        observe: ObservationSink,
        phase: Phase,
        result: TraceResult | None,
        params: dict[str, object] | None = None,
    ) -> None:
        if replay.done:
            return
        replay.done = True
        replay.phase = phase
        candidates: list[Mapping[str, object]] = [params] if params else []
        if result is not None and phase is Phase.COMPLETED:
            candidates += [*result.job_completed_event.values(), result.src_completed]
        final_stats = next((s for s in candidates if completed_job(s) is not None), None)
        final = completed_job(final_stats) if final_stats is not None else None
        downtime = final.downtime_s if final is not None else None
        error = ""
        if result is not None and phase is Phase.FAILED:
            error = result.error_message or "migration failed"
        observe(
            Observation(
                info=replay.info,
                now=self._clock(),
                phase=phase,
                limits=replay.limits,
                sample=parse_job_stats(final_stats) if final_stats is not None else None,
                error_message=error,
                actual_downtime_s=downtime,
                preflight=replay.preflight,
            )
        )

    def _emit(self, replay: _Replay, observe: ObservationSink, sample: JobSample | None) -> None:
        observe(
            Observation(
                info=replay.info,
                now=self._clock(),
                phase=replay.phase,
                limits=replay.limits,
                sample=sample,
                preflight=replay.preflight,
            )
        )

    def _refuse(self, domain_uuid: str) -> ControlRefused:
        replay = self._replays.get(domain_uuid)
        if replay is None or replay.done:
            raise MigrationGone(f"domain {domain_uuid} has no replayed migration running")
        return ControlRefused(
            f"{replay.info.domain_name} is a recording replayed from {replay.trace.path}; "
            "it cannot be controlled"
        )

    async def abort(self, domain_uuid: str) -> None:
        raise self._refuse(domain_uuid)

    async def force_complete(self, domain_uuid: str) -> bool:
        raise self._refuse(domain_uuid)

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        raise self._refuse(domain_uuid)

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending:
        # Nothing of a simulated or replayed migration outlives its agent.
        return Ending(Phase.FAILED, f"the {self.name} migration ended with the previous agent")

    async def describe(self, domain: str) -> DomainFacts:
        """A replayed domain as it was before its migration: what the recording's
        first samples and pre-flight lines say."""
        for replay in self._replays.values():
            if domain in (replay.info.domain_uuid, replay.info.domain_name):
                trace = replay.trace
                disk = next((s.sample.disk_total for s in trace.source_stats
                             if s.sample is not None and s.sample.disk_total), 0)  # fmt: skip
                return DomainFacts(
                    domain_uuid=replay.info.domain_uuid,
                    domain_name=replay.info.domain_name,
                    memory_bytes=replay.info.memory_bytes or 0,
                    disk_bytes=disk,
                    limits=limits_at(trace, 0.0),
                    preflight=replay.preflight,
                    migrating=not replay.done,
                    resident_bytes=replay.info.resident_bytes,
                    free_bytes=replay.info.free_bytes,
                )
        raise MigrationGone(f"no replayed domain {domain!r}")

    async def guests(self) -> tuple[str, ...]:
        """The replayed domains still migrating: the finished ones have left the host."""
        return tuple(r.info.domain_uuid for r in self._replays.values() if not r.done)

    async def close(self) -> None:
        self._replays.clear()
