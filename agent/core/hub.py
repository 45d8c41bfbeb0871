"""Fan-out of migration updates to watch streams.

Each published update is serialized once into the bytes of a
``WatchMigrationsResponse`` and the same bytes are offered to every subscriber
(the servicer streams them with an identity serializer).

Back-pressure: a subscriber's buffer holds at most one pending update per
migration (conflation: a newer state replaces an older unsent one), so a slow
reader costs memory proportional to the number of migrations, never to the
update rate, and publishing never waits for a reader. A final state is never
replaced, because nothing is published for a migration after its final state.
A subscriber that still exceeds ``capacity`` keys is closed as overflowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from migwatch.agent.core.convert import agent_status_to_pb, migration_to_pb
from migwatch.agent.model import HostState, Migration
from migwatch.v1 import migwatch_pb2 as pb

log = logging.getLogger(__name__)

_STATUS_KEY = ""  # conflation key of agent-status updates; ids are never empty


@dataclass(frozen=True, slots=True)
class Filter:
    """Which migrations a subscriber or a list call wants."""

    domain_uuid: str = ""
    domain_name: str = ""
    include_finished: bool = False

    def matches(self, m: Migration) -> bool:
        if self.domain_uuid and m.domain_uuid != self.domain_uuid:
            return False
        return not (self.domain_name and m.domain_name != self.domain_name)


@dataclass(frozen=True, slots=True)
class Update:
    """One serialized stream message, with what filtering needs."""

    key: str
    payload: bytes
    migration: Migration | None = None

    @property
    def final(self) -> bool:
        return self.migration is not None and self.migration.phase.terminal


class SubscriberLimitReached(Exception):
    """The agent already serves its configured maximum of watch streams (overload)."""


class HubClosed(Exception):
    """The hub was closed: the agent is shutting down (not an overload)."""


class Subscription:
    """One watch stream's bounded, conflating buffer."""

    def __init__(self, flt: Filter, capacity: int) -> None:
        self.filter = flt
        self._capacity = capacity
        self._pending: OrderedDict[str, Update] = OrderedDict()
        self._wake = asyncio.Event()
        self.closed = False
        self.overflowed = False
        self.conflated = 0  # updates replaced before they were sent

    def offer(self, update: Update) -> None:
        """Queue an update without ever blocking the publisher."""
        if self.closed:
            return
        if update.migration is not None and not self.filter.matches(update.migration):
            return
        if update.key in self._pending:
            self.conflated += 1
        # Assignment keeps the key's queue position, so a busy migration cannot
        # push the others back.
        self._pending[update.key] = update
        if len(self._pending) > self._capacity:
            self.overflowed = True
            self.closed = True
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next_batch(self, timeout: float) -> list[Update]:
        """Everything pending, oldest first; empty after ``timeout`` of quiet."""
        if not self._pending and not self.closed:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
        self._wake.clear()
        batch = list(self._pending.values())
        self._pending.clear()
        return batch


class Hub:
    """The agent's current state of every migration, and its watch streams."""

    def __init__(
        self,
        host: Callable[[], str],
        backend: str,
        version: str,
        clock: Callable[[], float],
        retention_s: float = 24 * 3600,
        max_subscribers: int = 10_000,
        subscriber_capacity: int = 4096,
    ) -> None:
        self._host = host  # a callable: the libvirt backend learns it once connected
        self._backend = backend
        self._version = version
        self._clock = clock
        self._retention_s = retention_s
        self._max_subscribers = max_subscribers
        self._capacity = subscriber_capacity
        self._migrations: dict[str, Migration] = {}
        self._payloads: dict[str, Update] = {}
        self._subscribers: set[Subscription] = set()
        self._sequence = 0
        self._status = (HostState.OK, "")
        self._status_update = self._make_status_update()
        self._closed = False

    # -- state -----------------------------------------------------------------
    @property
    def sequence(self) -> int:
        return self._sequence

    @property
    def retention_s(self) -> float:
        return self._retention_s

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def status(self) -> tuple[HostState, str]:
        return self._status

    def snapshot(self) -> list[Migration]:
        """Every record the hub holds. One list copy, so another thread (the metrics
        server's) may call it while the loop publishes."""
        return list(self._migrations.values())

    def get(self, migration_id: str) -> Migration | None:
        return self._migrations.get(migration_id)

    def matching(self, flt: Filter) -> list[Migration]:
        """Matching migrations, active first, then most recently finished."""
        self.prune()
        found = [
            m
            for m in self._migrations.values()
            if flt.matches(m) and (flt.include_finished or not m.phase.terminal)
        ]
        found.sort(key=lambda m: (m.phase.terminal, -(m.finished_at or 0), m.id))
        return found

    def publish(self, migration: Migration) -> Migration:
        """Record a new state, stamp its sequence and offer it to every subscriber."""
        self._sequence += 1
        migration = replace(migration, sequence=self._sequence)
        self._migrations[migration.id] = migration
        payload = pb.WatchMigrationsResponse(migration=migration_to_pb(migration))
        update = Update(migration.id, payload.SerializeToString(), migration)
        self._payloads[migration.id] = update
        for sub in self._subscribers:
            sub.offer(update)
        return migration

    def restore(self, migrations: list[Migration], sequence_floor: int = 0) -> None:
        """Load finished migrations kept across a restart (not re-announced), and
        continue numbering above ``sequence_floor``."""
        self._sequence = max(self._sequence, sequence_floor)
        for m in migrations:
            if m.id not in self._migrations:
                self._migrations[m.id] = m
                self._payloads[m.id] = Update(
                    m.id,
                    pb.WatchMigrationsResponse(migration=migration_to_pb(m)).SerializeToString(),
                    m,
                )
                self._sequence = max(self._sequence, m.sequence)

    def set_status(self, state: HostState, message: str) -> None:
        if (state, message) == self._status and self._status_host == self._host():
            return
        log.log(
            logging.WARNING if state is not HostState.OK else logging.INFO,
            "host %s is %s%s",
            self._host(),
            state.name,
            f": {message}" if message else "",
        )
        self._status = (state, message)
        self._status_update = self._make_status_update()
        for sub in self._subscribers:
            sub.offer(self._status_update)

    def prune(self) -> None:
        """Forget finished migrations older than the retention."""
        horizon = self._clock() - self._retention_s
        expired = [
            mid
            for mid, m in self._migrations.items()
            if m.finished_at is not None and m.finished_at < horizon
        ]
        for mid in expired:
            del self._migrations[mid]
            del self._payloads[mid]

    # -- subscribers -------------------------------------------------------------
    def subscribe(self, flt: Filter) -> tuple[list[Update], Subscription]:
        """Register a stream and return its snapshot.

        Snapshot and registration happen without an await in between, so no
        update falls between the snapshot and the live feed.
        """
        if self._closed:
            raise HubClosed("the hub is closed: the agent is shutting down")
        if len(self._subscribers) >= self._max_subscribers:
            raise SubscriberLimitReached(
                f"this agent already serves {len(self._subscribers)} watch streams "
                f"(limit {self._max_subscribers}); retry later or raise max_subscribers"
            )
        snapshot = [self._status_update] + [self._payloads[m.id] for m in self.matching(flt)]
        sub = Subscription(flt, self._capacity)
        self._subscribers.add(sub)
        return snapshot, sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        """End every stream (shutdown); new subscriptions are refused."""
        self._closed = True
        for sub in self._subscribers:
            sub.close()

    def _make_status_update(self) -> Update:
        self._status_host = self._host()
        state, message = self._status
        msg = pb.WatchMigrationsResponse(
            agent_status=agent_status_to_pb(
                self._host(), self._backend, state, message, self._version
            )
        )
        return Update(_STATUS_KEY, msg.SerializeToString())

    def agent_status_pb(self) -> pb.AgentStatus:
        state, message = self._status
        return agent_status_to_pb(self._host(), self._backend, state, message, self._version)
