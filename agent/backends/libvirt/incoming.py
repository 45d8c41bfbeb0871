"""The incoming migrations of one libvirt host: the destination has no job statistics, so
an incoming job's phase is its domain's state and lifecycle events (``watcher``'s
``incoming_phase`` and ``incoming_event``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migwatch.agent.backends.libvirt import scan
from migwatch.agent.backends.libvirt.watcher import incoming_event, incoming_phase
from migwatch.agent.backends.protocol import Ending, MigrationInfo, Observation, ObservationSink
from migwatch.agent.model import Direction, Phase

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Incoming:
    info: MigrationInfo
    phase: Phase = Phase.PRECOPY
    done: bool = False


class IncomingJobs:
    """The watched incoming jobs of one host, by domain UUID."""

    def __init__(
        self, *, conn: Callable[[], Any], host: Callable[[], str], clock: Callable[[], float]
    ) -> None:
        self.jobs: dict[str, Incoming] = {}
        self.observe: ObservationSink = lambda _obs: None  # set by the backend's run()
        self._conn = conn
        self._host = host
        self._clock = clock

    def start(self, uuid: str, name: str, now: float, phase: Phase = Phase.PRECOPY) -> None:
        info = MigrationInfo(
            domain_uuid=uuid,
            domain_name=name,
            source_host="",
            destination_host=self._host(),
            direction=Direction.INCOMING,
            started_at=round(now, 1),
        )
        watch = Incoming(info=info, phase=phase)
        self.jobs[uuid] = watch
        log.info("incoming migration of %s (%s) found", name, uuid)
        self._emit(watch, phase)

    async def check(self, jobs: set[str]) -> None:
        """Incoming ends whose job is gone: decide from the domain's state."""
        for uuid, watch in list(self.jobs.items()):
            if uuid in jobs or watch.done:
                continue
            conn = self._conn()
            if conn is None:
                return
            state = await asyncio.to_thread(scan.domain_state, conn, uuid)
            phase = incoming_phase(state)
            if phase is Phase.FAILED:
                how = "disappeared" if state is None else "stopped"
                self._emit(
                    watch, phase, f"the incoming domain {how} before the migration completed"
                )
            elif phase is not None:
                self._emit(watch, phase)

    def on_lifecycle(self, uuid: str, event: int, detail: int) -> bool:
        """A lifecycle event. False: not a job watched here."""
        watch = self.jobs.get(uuid)
        if watch is None:
            return False
        phase = incoming_event(event, detail)
        if phase is Phase.FAILED:
            self._emit(
                watch,
                phase,
                "the incoming migration stopped on the destination "
                "(aborted or failed at the source)",
            )
        elif phase is not None:
            self._emit(watch, phase)
        return True

    @staticmethod
    async def outcome(conn: Any, uuid: str) -> Ending | None:
        """How an incoming migration the previous agent watched ended, or None while it runs;
        raises libvirtError."""
        phase = incoming_phase(await asyncio.to_thread(scan.domain_state, conn, uuid))
        if phase is Phase.FAILED:
            return Ending(phase, "the incoming domain is gone: the migration did not complete")
        return Ending(phase) if phase is Phase.COMPLETED else None

    def _emit(self, watch: Incoming, phase: Phase, error: str = "") -> None:
        if watch.done:
            return
        watch.phase = phase
        if phase.terminal:
            watch.done = True
            self.jobs.pop(watch.info.domain_uuid, None)
        self.observe(
            Observation(info=watch.info, now=self._clock(), phase=phase, error_message=error)
        )
