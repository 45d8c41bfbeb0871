"""The fleet state: many agents' streams merged into one queryable view. Pure.

No asyncio, gRPC or clock here: the stream layer feeds events per agent and passes
``now``; every method returns the updates to emit, in order.

Per agent, one connection is: ``connecting`` → events (an ``AgentStatus``, the
snapshot's migrations, ``SnapshotComplete``, then changes and heartbeats) →
``disconnected``. Invariants:

* A final state (COMPLETED, FAILED, CANCELLED) of an agent's migration id is emitted
  at most once, across any number of re-syncs: ids already reported final are kept
  in ``_Book.finals`` (bounded, oldest forgotten first) and later states of them are
  ignored.
* Finals the client never saw live (they ended before the first connection) are not
  emitted unless ``include_finished``; finals that appear in a *re-sync* snapshot are
  emitted once, because they ended while we were disconnected. This relies on the
  stream asking the agent for ``include_finished`` snapshots.
* A tracked active id missing from a re-sync snapshot is emitted as
  ``MigrationVanished`` and dropped.
* An unchanged state re-delivered by a re-sync is not emitted again.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .model import (
    AgentState,
    AgentStatus,
    AgentUpdate,
    Convergence,
    Direction,
    FleetMigration,
    FleetSnapshot,
    Heartbeat,
    Migration,
    MigrationUpdate,
    MigrationVanished,
    SnapshotComplete,
    Update,
    WatchEvent,
)

# Verdicts from worst to best, for ordering; UNKNOWN ranks below the bad verdicts
# but above CONVERGING (no evidence is worse than good evidence).
_SEVERITY = {
    Convergence.NOT_CONVERGING: 4,
    Convergence.STALLED: 3,
    Convergence.SLOW: 2,
    Convergence.UNKNOWN: 1,
    Convergence.CONVERGING: 0,
}
# These never switch over by themselves: rank them as an infinite ETA.
_NEVER = frozenset({Convergence.NOT_CONVERGING, Convergence.STALLED})


def severity_key(m: FleetMigration) -> tuple[float, int, float, str, str]:
    """Sort key putting the slowest first: ``sorted(records, key=severity_key)``.

    Unknown ETAs and verdicts that never finish (not converging, stalled) rank as an
    infinite ETA; among equal ETAs the worse verdict first, then the longest running;
    domain name and id break the remaining ties so the order is stable.
    """
    eta = m.eta_s
    if eta is None or m.convergence in _NEVER:
        eta = math.inf
    elapsed = m.source.elapsed_s if m.source is not None else None
    return (-eta, -_SEVERITY[m.convergence], -(elapsed or 0.0), m.domain_name, m.id)


# The two ends share only the domain UUID: a hypervisor does not tell the source
# where its guest goes, nor the destination where it came from (libvirt), so each
# end reports the other host empty. Repeat migrations of one domain get a new
# record when an end that already finished is followed by a new one (``_join``).
_Key = str  # domain_uuid


def _key(m: Migration) -> _Key:
    return m.domain_uuid


def _is_source(m: Migration) -> bool:
    # An end of unknown direction carries whatever progress there is: treat as source.
    return m.direction is not Direction.INCOMING


@dataclass(slots=True)
class _Record:
    """Mutable join of one migration's two ends; ``view`` freezes it."""

    source: tuple[str, Migration] | None = None  # (agent target, end)
    destination: tuple[str, Migration] | None = None

    def end(self, source: bool) -> tuple[str, Migration] | None:
        return self.source if source else self.destination

    def set_end(self, source: bool, value: tuple[str, Migration] | None) -> None:
        if source:
            self.source = value
        else:
            self.destination = value

    def view(self, unreachable: frozenset[str]) -> FleetMigration:
        ends = [e for e in (self.source, self.destination) if e is not None]
        first = ends[0][1]
        src = self.source[1] if self.source else None
        dst = self.destination[1] if self.destination else None
        return FleetMigration(
            domain_uuid=first.domain_uuid,
            domain_name=next((m.domain_name for _, m in ends if m.domain_name), ""),
            # Each end knows its own host for sure and the other's perhaps.
            source_host=next(
                (h for h in (src and src.source_host, dst and dst.source_host) if h), ""
            ),
            destination_host=next(
                (h for h in (dst and dst.destination_host, src and src.destination_host) if h),
                "",
            ),
            source=self.source[1] if self.source else None,
            destination=self.destination[1] if self.destination else None,
            source_agent=self.source[0] if self.source else None,
            destination_agent=self.destination[0] if self.destination else None,
            stale=any(target in unreachable for target, _ in ends),
        )


@dataclass(slots=True)
class _Book:
    """What the fleet knows about one agent."""

    state: AgentState
    active: dict[str, Migration] = field(default_factory=dict)  # id -> latest, non-final
    finals: OrderedDict[str, None] = field(default_factory=OrderedDict)  # ids reported final
    syncing: bool = False  # between connecting() and SnapshotComplete
    resync: bool = False  # this connection follows an earlier synced one
    ever_synced: bool = False
    seen: set[str] = field(default_factory=set)  # ids in the current snapshot


class FleetState:
    """The merged state of many agents. Feed it per-agent events; query it any time.

    Args:
        targets: the agents' "host:port" targets, in display order.
        include_finished: also emit finals that ended before the first connection.
        final_memory: per agent, how many final ids to remember for de-duplication;
            keep it above the number of finished migrations an agent retains.
        finished_keep: how many finished fleet records to keep for queries.
    """

    def __init__(
        self,
        targets: Iterable[str],
        *,
        include_finished: bool = False,
        final_memory: int = 10_000,
        finished_keep: int = 100,
    ) -> None:
        self._books = {t: _Book(AgentState(target=t)) for t in targets}
        self._include_finished = include_finished
        self._final_memory = final_memory
        self._finished_keep = finished_keep
        self._records: dict[_Key, _Record] = {}
        self._finished: OrderedDict[_Key, None] = OrderedDict()  # final records, oldest first

    # -- feeding --------------------------------------------------------------

    def add_agent(self, target: str) -> None:
        """Follow a target not given at construction (a host first heard of on the bus)."""
        if target not in self._books:
            self._books[target] = _Book(AgentState(target=target))

    def connecting(self, target: str) -> None:
        """A new connection to ``target`` starts; a snapshot will follow."""
        book = self._books[target]
        book.syncing = True
        book.resync = book.ever_synced
        book.seen = set()

    def apply(self, target: str, event: WatchEvent, now: float) -> list[Update]:
        """Apply one event from ``target``'s stream; return the updates to emit."""
        book = self._books[target]
        # Any message proves the agent reachable; the first one is its AgentStatus.
        status = event if isinstance(event, AgentStatus) else None
        out = self._set_state(book, now, reachable=True, error="", status=status)
        if isinstance(event, Migration):
            out += self._apply_migration(target, book, event)
        elif isinstance(event, SnapshotComplete):
            out += self._complete_snapshot(target, book, now)
        elif isinstance(event, Heartbeat):
            pass  # liveness is the stream layer's business
        return out

    def apply_list(
        self, target: str, migrations: Iterable[Migration], status: AgentStatus | None, now: float
    ) -> list[Update]:
        """Apply a one-shot ``ListMigrations`` answer as if it were a watch snapshot."""
        self.connecting(target)
        count = 0
        out = self.apply(target, status, now) if status is not None else []
        for m in migrations:
            out += self.apply(target, m, now)
            count += 1
        out += self.apply(target, SnapshotComplete(migration_count=count, sequence=0), now)
        return out

    def disconnected(self, target: str, error: str, now: float) -> list[Update]:
        """The link to ``target`` is down (or could not be made) because of ``error``."""
        book = self._books[target]
        book.syncing = False
        return self._set_state(book, now, reachable=False, synced=False, error=error)

    # -- queries --------------------------------------------------------------

    def agents(self) -> tuple[AgentState, ...]:
        """Every agent's state, in the order the targets were given."""
        return tuple(b.state for b in self._books.values())

    def snapshot(self) -> FleetSnapshot:
        """An immutable copy of the fleet: active migrations worst first."""
        unreachable = frozenset(t for t, b in self._books.items() if not b.state.reachable)
        views = [r.view(unreachable) for r in self._records.values()]
        active = sorted((v for v in views if not v.final), key=severity_key)
        finished = [self._records[k].view(unreachable) for k in reversed(self._finished)]
        return FleetSnapshot(
            agents=self.agents(), migrations=tuple(active), finished=tuple(finished)
        )

    # -- internals ------------------------------------------------------------

    def _set_state(
        self,
        book: _Book,
        now: float,
        *,
        reachable: bool | None = None,
        synced: bool | None = None,
        status: AgentStatus | None = None,
        error: str | None = None,
    ) -> list[Update]:
        old = book.state
        new = replace(
            old,
            reachable=old.reachable if reachable is None else reachable,
            synced=old.synced if synced is None else synced,
            status=old.status if status is None else status,
            error=old.error if error is None else error,
        )
        if new == old:
            return []
        if new.reachable != old.reachable or old.since is None:
            new = replace(new, since=now)
        book.state = new
        return [AgentUpdate(agent=old.target, state=new)]

    def _apply_migration(self, target: str, book: _Book, m: Migration) -> list[Update]:
        if book.syncing:
            book.seen.add(m.id)
        if m.id in book.finals:
            return []  # already reported final: nothing after a final is news
        prev = book.active.get(m.id)
        if m.final:
            self._remember_final(book, m.id)
            book.active.pop(m.id, None)
            first_sight = prev is None and book.syncing and not book.resync
            if first_sight and not self._include_finished:
                return []  # history from before we watched
        else:
            if prev == m:
                return []  # re-delivered by a re-sync, unchanged
            book.active[m.id] = m
        return [MigrationUpdate(agent=target, migration=m, record=self._join(target, m))]

    def _complete_snapshot(self, target: str, book: _Book, now: float) -> list[Update]:
        out: list[Update] = []
        if book.syncing:
            for mid in [i for i in book.active if i not in book.seen]:
                gone = book.active.pop(mid)
                self._drop_end(target, gone)
                out.append(MigrationVanished(agent=target, migration=gone))
            book.syncing = False
            book.ever_synced = True
            book.seen = set()
        return out + self._set_state(book, now, synced=True)

    def _remember_final(self, book: _Book, mid: str) -> None:
        book.finals[mid] = None
        while len(book.finals) > self._final_memory:
            book.finals.popitem(last=False)

    def _join(self, target: str, m: Migration) -> FleetMigration:
        key = _key(m)
        src = _is_source(m)
        rec = self._records.get(key)
        if rec is not None:
            old = rec.end(src)
            if old is not None and old[1].id != m.id and old[1].final and not m.final:
                # The same domain migrates again: a new record.
                rec = None
        if rec is None:
            rec = _Record()
            self._records[key] = rec
            self._finished.pop(key, None)
        rec.set_end(src, (target, m))
        unreachable = frozenset(t for t, b in self._books.items() if not b.state.reachable)
        view = rec.view(unreachable)
        if view.final:
            self._finished[key] = None
            self._finished.move_to_end(key)
            while len(self._finished) > self._finished_keep:
                old_key, _ = self._finished.popitem(last=False)
                del self._records[old_key]
        return view

    def _drop_end(self, target: str, m: Migration) -> None:
        key = _key(m)
        rec = self._records.get(key)
        if rec is None:
            return
        src = _is_source(m)
        end = rec.end(src)
        if end is not None and end[0] == target and end[1].id == m.id:
            rec.set_end(src, None)
        if rec.source is None and rec.destination is None:
            del self._records[key]
            self._finished.pop(key, None)
