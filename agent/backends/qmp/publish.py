"""What the QMP backend tells the agent, and what it writes to the trace.

Each observation the pure ``GuestWatcher`` makes is handed to the agent's sink; for an
outgoing migration the recorder (if any) also gets its trace: opened at the first sample
that shows copying, a ``stats`` line per poll with QEMU's own reply, the events of a
dedicated monitor, the controls applied, and the outcome at the end (TRACE_FORMAT.md).

Apart from the scan because three paths publish (the scan's polls, a dedicated monitor's
events, the controls' effects) and all of them need to know which traces are open.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from migwatch.agent.backends.protocol import Observation, ObservationSink
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.model import Direction, Phase

from .session import Socket
from .watcher import Poll


class Publisher:
    """The agent's observation sink (set by ``attach``) and the optional trace recorder."""

    def __init__(
        self,
        *,
        recorder: TraceRecorder | None,
        sample_interval_s: float,
        completed: Callable[[Observation, Mapping[str, object]], None] = lambda _o, _s: None,
    ) -> None:
        self._recorder = recorder
        # Called with each completed outgoing migration and its final job stats: the
        # backend learns its host's QEMU overhead from them.
        self._completed = completed
        self._interval = sample_interval_s
        self._observe: ObservationSink | None = None
        self._recording: set[str] = set()  # UUIDs whose trace is open

    def attach(self, observe: ObservationSink) -> None:
        """Where observations go from now on (the backend's ``run``)."""
        self._observe = observe

    def publish(self, sock: Socket, observations: list[Observation], poll: Poll | None) -> None:
        """Hand on ``observations``; ``poll``, if they came from one, is recorded with them."""
        assert self._observe is not None
        recorder = self._recorder
        # The job stats the watcher made of this poll (disk mirrors merged in): the trace
        # holds what the estimator saw, so a replay scores the same samples.
        stats = sock.watcher.last_stats if sock.watcher is not None and poll is not None else {}
        for obs in observations:
            outgoing = obs.info.direction is Direction.OUTGOING
            uuid = obs.info.domain_uuid
            if recorder is not None and outgoing and poll is not None:
                sample = obs.sample
                if (
                    uuid not in self._recording
                    and sample is not None
                    and (sample.iteration or sample.disk_total)
                ):
                    self._recording.add(uuid)
                    recorder.start(
                        obs.info,
                        obs.limits,
                        self._interval,
                        obs.preflight,
                        uri=str(sock.path),
                        backend="qmp",
                    )
                recorder.stats(
                    uuid,
                    stats,
                    sock.call_ms,
                    runstate=poll.runstate,
                    qmp=dict(poll.migrate),
                )
            self._observe(obs)
            if obs.phase is Phase.COMPLETED and outgoing and poll is not None:
                self._completed(obs, stats)
            if obs.phase.terminal and outgoing and recorder is not None:
                completed = stats if poll and obs.phase is Phase.COMPLETED else None
                outcome = {Phase.COMPLETED: "completed", Phase.CANCELLED: "aborted"}.get(
                    obs.phase, "failed"
                )
                recorder.finish(
                    uuid,
                    outcome,
                    obs.error_message or None,
                    completed if completed and "time_elapsed" in completed else None,
                )
                self._recording.discard(uuid)

    def event(self, domain_uuid: str, name: str, data: dict[str, object]) -> None:
        """A QMP event of a dedicated monitor, into the trace (if recording at all)."""
        if self._recorder is not None:
            self._recorder.event(domain_uuid, name, data=data)

    def actions(
        self, domain_uuid: str, actions: tuple[tuple[str, object], ...], call_ms: float
    ) -> None:
        """A control's ``action`` lines, into the migration's trace if one is open."""
        if self._recorder is not None and domain_uuid in self._recording:
            for action, arg in actions:
                self._recorder.action(domain_uuid, action, arg, "ok", call_ms)

    def close(self) -> None:
        """Close the recorder's open traces."""
        if self._recorder is not None:
            self._recorder.close()
