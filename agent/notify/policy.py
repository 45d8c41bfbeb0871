"""What to publish on the bus, and when. Pure: fed records and ``now``, returns what to send.

Nova once sent live-migration progress through RabbitMQ every few seconds and overloaded it
(nova bug 2091138). This policy keeps the bus cheap and the agent safe from the bus:

* ``START`` once per migration, when the agent first sees it.
* ``PROGRESS`` at most once per ``interval_s`` per migration, carrying its latest state
  (newer states replace an unsent one: conflation per migration), plus at once when the
  phase or the verdict changes.
* ``END`` once per migration, with its final state; kept until the broker takes it.
* ``HOST`` when the agent's link to its hypervisor changes (latest state only).

The caller (``publisher.py``) asks ``take(now)`` for what to send, sends it in that order,
and reports back ``sent`` (the broker took them) or ``failed`` (put back: a start or an end
is retried until taken, a progress only if nothing newer replaced it).

Invariants:

* Per migration, at most one of each kind is pending or in flight, so the memory held is
  bounded by the migrations the agent publishes (the hub's records), not by the update rate
  or the length of an outage.
* A migration's start is taken before its progress or end; nothing after its end.
* An end is never dropped while fewer than ``max_unsent_ends`` ends wait (a host runs tens
  of migrations, so thousands means minutes of a maintenance wave without a broker); past
  that the oldest waiting end is dropped and counted in ``dropped_ends``.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass, field

from migwatch.agent.model import Convergence, HostState, Migration, Phase


class Kind(enum.Enum):
    """The notifications a migration (or the host) produces."""

    START = "start"  # the agent first sees the migration
    PROGRESS = "progress"  # its latest state, rate-limited
    END = "end"  # its final state
    HOST = "host"  # the agent's link to the hypervisor


@dataclass(frozen=True, slots=True)
class HostReport:
    """The agent's own state, as ``migwatch.host.state`` reports it."""

    host: str
    backend: str
    state: HostState
    message: str
    version: str


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification to send: a migration's state or the host's."""

    kind: Kind
    key: str  # the migration id; "" for the host
    migration: Migration | None = None
    host: HostReport | None = None


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    interval_s: float = 10.0  # progress per migration at most this often
    max_unsent_ends: int = 10_000  # see the module docstring
    remember_ended: int = 10_000  # ended ids kept to ignore late states of them


@dataclass(slots=True)
class _Track:
    """One migration's notification state."""

    start: Migration | None = None  # pending start
    progress: Migration | None = None  # pending progress (latest state)
    end: Migration | None = None  # pending end
    started: bool = False  # the start was taken (sent or in flight)
    in_flight: set[Kind] = field(default_factory=set)
    last_progress_at: float | None = None  # when a start/progress was last taken
    last_shape: tuple[Phase, Convergence] | None = None  # phase and verdict last taken


@dataclass(slots=True)
class Stats:
    """Counters for /metrics (monotonic, except ``pending``)."""

    sent: dict[Kind, int] = field(default_factory=lambda: dict.fromkeys(Kind, 0))
    conflated: int = 0  # progress states replaced before they were sent
    dropped_ends: int = 0  # ends dropped past max_unsent_ends
    failed: int = 0  # notifications put back after a failed send


class NotifyPolicy:
    """See the module docstring."""

    def __init__(self, config: PolicyConfig) -> None:
        self._config = config
        self._tracks: OrderedDict[str, _Track] = OrderedDict()  # by first sight
        self._ended: OrderedDict[str, None] = OrderedDict()  # ids whose end was taken
        self._host: HostReport | None = None  # pending host report
        self._host_in_flight = False
        self._host_last: HostReport | None = None  # last one taken
        self.stats = Stats()

    # -- feeding -----------------------------------------------------------------

    def observe(self, m: Migration, now: float) -> None:
        """A new state of a migration (the hub published it)."""
        if m.id in self._ended:
            return  # nothing after an end
        track = self._tracks.get(m.id)
        if track is None:
            track = self._tracks[m.id] = _Track(start=m)
            if not m.phase.terminal:
                return  # its start carries this state
        if m.phase.terminal:
            if track.end is None and Kind.END not in track.in_flight:
                track.end = m
                self._bound_ends()
            track.progress = None  # the end supersedes any unsent progress
            return
        if track.start is not None:
            track.start = m  # not taken yet: the start carries the latest state
            return
        if track.progress is not None:
            self.stats.conflated += 1
        track.progress = m

    def observe_host(self, report: HostReport) -> None:
        """The agent's host state (sent when it differs from the last one taken)."""
        if report == self._host_last and self._host is None:
            return
        self._host = report

    # -- sending -----------------------------------------------------------------

    def take(self, now: float) -> list[Notification]:
        """Everything due now, in the order to send it; marks it in flight."""
        out: list[Notification] = []
        if self._host is not None and not self._host_in_flight:
            out.append(Notification(Kind.HOST, "", host=self._host))
            self._host_last, self._host = self._host, None
            self._host_in_flight = True
        for mid, t in self._tracks.items():
            if t.start is not None and Kind.START not in t.in_flight:
                out.append(Notification(Kind.START, mid, t.start))
                t.in_flight.add(Kind.START)
                t.started = True
                t.last_progress_at = now
                t.last_shape = (t.start.phase, t.start.convergence)
                t.start = None
            if not t.started:
                continue  # a start that failed goes first when it is retried
            if (
                t.progress is not None
                and Kind.PROGRESS not in t.in_flight
                and (self._progress_due(t, now) <= now)
            ):
                out.append(Notification(Kind.PROGRESS, mid, t.progress))
                t.in_flight.add(Kind.PROGRESS)
                t.last_progress_at = now
                t.last_shape = (t.progress.phase, t.progress.convergence)
                t.progress = None
            if t.end is not None and Kind.END not in t.in_flight:
                out.append(Notification(Kind.END, mid, t.end))
                t.in_flight.add(Kind.END)
                t.end = None
        return out

    def sent(self, notes: list[Notification]) -> None:
        """The broker took these."""
        for n in notes:
            self.stats.sent[n.kind] += 1
            if n.kind is Kind.HOST:
                self._host_in_flight = False
                continue
            t = self._tracks.get(n.key)
            if t is None:
                continue
            t.in_flight.discard(n.kind)
            if n.kind is Kind.END:
                del self._tracks[n.key]
                self._ended[n.key] = None
                while len(self._ended) > self._config.remember_ended:
                    self._ended.popitem(last=False)

    def failed(self, notes: list[Notification]) -> None:
        """These were not sent: put them back (see the module docstring)."""
        for n in notes:
            self.stats.failed += 1
            if n.kind is Kind.HOST:
                self._host_in_flight = False
                if self._host is None:
                    self._host = n.host
                continue
            t = self._tracks.get(n.key)
            if t is None:
                continue
            t.in_flight.discard(n.kind)
            if n.kind is Kind.START:
                t.start, t.started = n.migration, False
            elif n.kind is Kind.END:
                t.end = n.migration
                self._bound_ends()
            elif t.progress is None and t.end is None:
                t.progress = n.migration
                t.last_progress_at = None  # due again as soon as the bus is back

    def next_due(self, now: float) -> float | None:
        """When ``take`` will next return something (``now`` if already), or None."""
        if self._host is not None and not self._host_in_flight:
            return now
        due: float | None = None
        for t in self._tracks.values():
            if (t.start is not None and Kind.START not in t.in_flight) or (
                t.started and t.end is not None and Kind.END not in t.in_flight
            ):
                return now
            if t.started and t.progress is not None and Kind.PROGRESS not in t.in_flight:
                at = max(now, self._progress_due(t, now))
                due = at if due is None else min(due, at)
        return due

    def _progress_due(self, t: _Track, now: float) -> float:
        """When ``t``'s pending progress may go: at once on a change of phase or
        verdict (or with nothing sent yet), else an interval after the last one."""
        p = t.progress
        if p is None:
            return float("inf")
        if t.last_progress_at is None or (p.phase, p.convergence) != t.last_shape:
            return now
        return t.last_progress_at + self._config.interval_s

    @property
    def pending(self) -> int:
        """Notifications waiting to be taken (not those in flight)."""
        count = int(self._host is not None)
        for t in self._tracks.values():
            count += (t.start is not None) + (t.progress is not None) + (t.end is not None)
        return count

    @property
    def unsent_ends(self) -> int:
        return sum(1 for t in self._tracks.values() if t.end is not None or Kind.END in t.in_flight)

    def _bound_ends(self) -> None:
        waiting = [mid for mid, t in self._tracks.items() if t.end is not None]
        for mid in waiting[: max(0, len(waiting) - self._config.max_unsent_ends)]:
            del self._tracks[mid]
            self._ended[mid] = None
            self.stats.dropped_ends += 1
