"""Records each outgoing migration as a trace file (``bench/traces/TRACE_FORMAT.md``).

What the agent saw, raw: libvirt's job-stats dicts, the domain events and the
outcome, so a real migration can be replayed (``--backend replay``) and scored
(``make bench-eta``). Lines are written as they happen and flushed, so a trace
survives an agent crash up to its last sample.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from migwatch.agent.backends.jobstats import job_type_name
from migwatch.agent.backends.protocol import MigrationInfo
from migwatch.agent.model import MIB, Limits, MigrationPolicy, Preflight

log = logging.getLogger(__name__)

_OPERATIONS = {4: "MIGRATION_IN", 5: "MIGRATION_OUT"}


@dataclass(slots=True)
class _Open:
    file: IO[str]
    started_at: float  # the job's start, unix seconds: ``dt`` counts from it


class TraceRecorder:
    """One open trace file per outgoing migration, in ``directory``."""

    def __init__(
        self,
        directory: Path,
        clock: Callable[[], float] = time.time,
        policy: MigrationPolicy | None = None,
    ) -> None:
        """``policy``: the host's declared migration policy, written into each trace as the
        flags it stands for, so a replay judges the migration as the agent did."""
        directory.mkdir(parents=True, exist_ok=True)
        self._policy = policy or MigrationPolicy()
        self._dir = directory
        self._clock = clock
        self._open: dict[str, _Open] = {}

    def start(
        self,
        info: MigrationInfo,
        limits: Limits,
        interval_s: float,
        preflight: Preflight | None = None,
        **meta: Any,
    ) -> None:
        if info.domain_uuid in self._open:
            return
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", info.domain_name) or "domain"
        path = self._dir / f"{safe}-{info.domain_uuid[:8]}-{int(info.started_at)}.jsonl"
        f = path.open("a", encoding="utf-8")
        self._open[info.domain_uuid] = _Open(f, info.started_at)
        bandwidth = limits.max_bandwidth_bps
        self._write(
            info.domain_uuid,
            "meta",
            None,
            scenario="recorded",
            recorded_by="migwatch-agent",
            dom_uuid=info.domain_uuid,
            src_host=info.source_host,
            dst_host=info.destination_host,
            interval_s=interval_s,
            bandwidth_mib_s=bandwidth // MIB if bandwidth else None,
            params={"bandwidth": bandwidth // MIB} if bandwidth else {},
            flag_names=_flag_names(self._policy.apply(limits)),
            guest={"name": info.domain_name},
            preflight=preflight is not None,
            **meta,
        )
        for period, mbps in sorted((preflight.rates if preflight else {}).items()):
            assert preflight is not None
            self._write(
                info.domain_uuid, "dirtyrate", None, host="A", mode="page-sampling",
                period_s=period, megabytes_per_second=mbps, calc_status=2,
                measured_at=preflight.measured_at,
            )  # fmt: skip
        if info.resident_bytes:
            # The source QEMU's resident memory when the job was found (memoryStats `rss`),
            # and the guest's free memory read with it (balloon statistics `unused`), in KiB.
            mem = {"rss": info.resident_bytes // 1024}
            if info.free_bytes:
                mem["unused"] = info.free_bytes // 1024
            self._write(info.domain_uuid, "memstats", None, host="A", stats=mem)
        log.info("recording migration of %s to %s", info.domain_name, path)

    def stats(
        self, domain_uuid: str, stats: Mapping[str, Any], call_ms: float, **extra: Any
    ) -> None:
        """``stats`` in libvirt's job-stats keys; ``extra``: backend-specific raw fields
        (the QMP backend adds its ``query-migrate`` reply as ``qmp``)."""
        job = int(stats.get("type", 0))
        op = stats.get("operation")
        self._write(
            domain_uuid,
            "stats",
            self._dt(domain_uuid),
            host="A",
            role="src",
            call_ms=round(call_ms, 3),
            job_type=job_type_name(job),
            operation=_OPERATIONS.get(int(op), str(op)) if op is not None else None,
            stats=dict(stats),
            **extra,
        )

    def stats_error(self, domain_uuid: str, message: str, code: int) -> None:
        self._write(
            domain_uuid,
            "stats",
            self._dt(domain_uuid),
            host="A",
            role="src",
            error=message,
            code=code,
        )

    def event(self, domain_uuid: str, event: str, **fields: Any) -> None:
        self._write(domain_uuid, "event", self._dt(domain_uuid), host="A", event=event, **fields)

    def action(self, domain_uuid: str, action: str, arg: Any, result: str, call_ms: float) -> None:
        self._write(
            domain_uuid, "action", self._dt(domain_uuid), action=action, arg=arg, result=result,
            call_ms=round(call_ms, 3),
        )  # fmt: skip

    def finish(
        self,
        domain_uuid: str,
        outcome: str,
        error: str | None,
        completed: Mapping[str, Any] | None,
    ) -> None:
        if domain_uuid not in self._open:
            return
        self._write(
            domain_uuid,
            "result",
            self._dt(domain_uuid),
            outcome=outcome,
            error={"message": error} if error else None,
            src_completed=dict(completed) if completed else {},
            dst_completed={},
            job_completed_event={"A": dict(completed)} if completed else {},
        )
        self._open.pop(domain_uuid).file.close()

    def close(self) -> None:
        for entry in self._open.values():
            entry.file.close()
        self._open.clear()

    def _dt(self, domain_uuid: str) -> float | None:
        entry = self._open.get(domain_uuid)
        return None if entry is None else round(self._clock() - entry.started_at, 4)

    def _write(self, domain_uuid: str, kind: str, dt: float | None, **fields: Any) -> None:
        entry = self._open.get(domain_uuid)
        if entry is None:
            return
        line = {"t": round(self._clock(), 4), "dt": dt, "type": kind, **fields}
        try:
            entry.file.write(json.dumps(line, default=str) + "\n")
            entry.file.flush()
        except OSError as exc:
            # A full disk must not take the monitoring down with it.
            log.error("trace of %s no longer recorded: %s", domain_uuid, exc)
            self._open.pop(domain_uuid).file.close()


def _flag_names(limits: Limits) -> list[str]:
    """The migrate flags ``limits`` stand for (``tracefacts.limits_at`` reads them back)."""
    names = []
    if limits.postcopy_allowed:
        names.append("VIR_MIGRATE_POSTCOPY")
    if limits.auto_converge:
        names.append("VIR_MIGRATE_AUTO_CONVERGE")
    return names
