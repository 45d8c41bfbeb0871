"""Wires a backend to the tracker and the hub, and carries out controls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from migwatch.agent.backends.protocol import Backend, Ending, Observation
from migwatch.agent.core.hub import Filter, Hub
from migwatch.agent.core.store import FinalStore
from migwatch.agent.core.tracker import Tracker, track_key
from migwatch.agent.errors import ControlError, ControlRefused, MigrationGone
from migwatch.agent.model import Direction, DomainFacts, HostState, Migration, Phase

log = logging.getLogger(__name__)


class Monitor:
    """Feeds backend observations through the tracker into the hub."""

    def __init__(
        self, backend: Backend, tracker: Tracker, hub: Hub, store: FinalStore | None = None
    ) -> None:
        self.backend = backend
        self.tracker = tracker
        self.hub = hub
        self.store = store
        self._remembered: set[str] = set()  # ids of migrations in flight in the store

    def observe(self, obs: Observation) -> None:
        migration = self.tracker.observe(obs)
        if migration is None:
            return
        published = self.hub.publish(migration)
        if self.store is not None:
            self.store.reserve(published.sequence)
            key = track_key(obs.info)
            if published.phase.terminal:
                self.store.save(published, self.hub.retention_s)
                self.store.forget_active(key)
                self._remembered.discard(published.id)
            elif published.id not in self._remembered:
                self.store.remember_active(key, published, obs.info.started_at)
                self._remembered.add(published.id)
        if published.phase.terminal:
            log.info(
                "migration %s of %s %s after %.1fs%s",
                published.id,
                published.domain_name,
                published.phase.name.lower(),
                published.elapsed_s or 0.0,
                f": {published.error_message}" if published.error_message else "",
            )

    def status(self, state: HostState, message: str) -> None:
        self.hub.set_status(state, message)

    async def run(self) -> None:
        await self.backend.run(self.observe, self.status)

    async def settle(self, orphans: dict[str, Migration], wait_s: float, tries: int = 60) -> None:
        """Report how migrations in flight when the previous agent stopped ended.

        Those still running are found again by the backend (same id); the others get
        their final state here, from what the hypervisor kept, so none is dropped.
        """
        pending = dict(orphans)
        for _ in range(tries):
            if not pending:
                return
            await asyncio.sleep(wait_s)  # first, let discovery find the running ones
            for key, m in list(pending.items()):
                if m.id in self.tracker.active_ids() or self.hub.get(m.id) is not None:
                    del pending[key]  # found again, or already final
                    continue
                try:
                    ending = await self.backend.outcome_of(m.domain_uuid, m.direction)
                except ControlError as exc:
                    log.info("outcome of %s not known yet: %s", m.id, exc)
                    continue
                if ending is None:
                    continue
                del pending[key]
                self._publish_ending(key, m, ending)

    def _publish_ending(self, key: str, m: Migration, ending: Ending) -> None:
        now = time.time()
        final = replace(
            m,
            phase=ending.phase,
            error_message=ending.error_message,
            actual_downtime_s=ending.actual_downtime_s,
            eta_s=0.0 if ending.phase is Phase.COMPLETED else None,
            eta_low_s=0.0 if ending.phase is Phase.COMPLETED else None,
            eta_high_s=0.0 if ending.phase is Phase.COMPLETED else None,
            recommendations=(),
            updated_at=now,
            finished_at=now,
        )
        published = self.hub.publish(final)
        log.info("migration %s ended while unwatched: %s", m.id, ending.phase.name.lower())
        if self.store is not None:
            self.store.save(published, self.hub.retention_s)
            self.store.forget_active(key)

    # -- controls ----------------------------------------------------------------
    def controllable(self, migration_id: str) -> Migration:
        """The migration a control may act on, or a ControlError saying why not."""
        m = self.hub.get(migration_id)
        if m is None:
            raise MigrationGone(
                f"no migration with id {migration_id!r} on {self.hub_host()}; "
                "ListMigrations shows the ids"
            )
        if m.phase.terminal:
            raise ControlRefused(
                f"migration {migration_id} already ended ({m.phase.name.lower()}); "
                "there is nothing to act on"
            )
        if m.direction is Direction.INCOMING:
            raise ControlRefused(
                f"migration {migration_id} is the incoming end on {m.agent_host}; "
                f"send controls to the agent of its source host {m.source_host}"
            )
        return m

    def hub_host(self) -> str:
        return self.backend.host

    def _latest(self, m: Migration) -> Migration:
        return self.hub.get(m.id) or m

    async def describe(self, domain: str) -> DomainFacts:
        return await self.backend.describe(domain)

    async def guests(
        self, named: Sequence[str] = (), *, skip_departed: bool = False
    ) -> list[DomainFacts]:
        """What a prediction needs of each guest to move: the ``named`` ones, or every guest
        running on the host. A named guest that is not here raises MigrationGone, unless
        ``skip_departed`` says it has left: then it is skipped."""
        found = []
        for domain in named or await self.backend.guests():
            try:
                found.append(await self.backend.describe(domain))
            except MigrationGone:
                if named and not skip_departed:
                    raise
                # It left between the listing (or the previous plan) and now: nothing to move.
        return found

    def outgoing(self) -> list[Migration]:
        """The migrations leaving this host now, as last published."""
        return [m for m in self.hub.matching(Filter()) if m.direction is Direction.OUTGOING]

    async def abort(self, migration_id: str) -> Migration:
        m = self.controllable(migration_id)
        log.warning("aborting migration %s of %s", m.id, m.domain_name)
        await self.backend.abort(m.domain_uuid)
        return self._latest(m)

    async def force_complete(self, migration_id: str) -> tuple[Migration, bool]:
        m = self.controllable(migration_id)
        by_postcopy = await self.backend.force_complete(m.domain_uuid)
        log.warning(
            "forcing migration %s of %s to complete by %s",
            m.id,
            m.domain_name,
            "post-copy" if by_postcopy else "pausing the guest",
        )
        return self._latest(m), by_postcopy

    async def update_limits(
        self, migration_id: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> Migration:
        m = self.controllable(migration_id)
        log.info(
            "migration %s: limits max_downtime=%s max_bandwidth=%s",
            m.id,
            max_downtime_s,
            max_bandwidth_bps,
        )
        await self.backend.update_limits(m.domain_uuid, max_downtime_s, max_bandwidth_bps)
        return self._latest(m)
