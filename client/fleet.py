"""``Fleet``: many agents as one merged, re-syncing stream and one queryable state.

::

    fleet = Fleet(["hv1:50051", "hv2:50051"])
    async with fleet.watch() as updates:
        async for update in updates:
            ...                      # MigrationUpdate | MigrationVanished | AgentUpdate
            fleet.snapshot()         # the joined state, worst first, any time
"""

from __future__ import annotations

import asyncio
import os
import random as _random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc

from .agent_client import AgentClient, ChannelOption
from .backoff import DEFAULT_BACKOFF, Backoff
from .errors import InvalidArgument, MigwatchError, NotFound
from .merge import FleetState
from .model import FleetSnapshot, Migration, MigrationEstimate, Update
from .stream import StreamConfig, follow_agent
from .targets import resolve_targets

# Updates waiting for the consumer. Large enough for the snapshots of a few agents
# arriving at once (hosts run tens of migrations, not thousands); when full, the
# agent streams stop being read and the agents conflate for us, finals kept.
_QUEUE_SIZE = 1024

_T = TypeVar("_T")


class _Updates:
    """The consumer's side of the fleet queue: an endless async iterator."""

    def __init__(self, queue: asyncio.Queue[Update]) -> None:
        self._queue = queue

    def __aiter__(self) -> _Updates:
        return self

    async def __anext__(self) -> Update:
        return await self._queue.get()


class Fleet:
    """A set of agents watched together.

    Args:
        targets: ``host:port`` of each agent; ``None`` or empty reads
            ``MIGWATCH_AGENTS`` (comma-separated), else ``127.0.0.1:50051``.
        include_finished: also report migrations that had ended before watching.
        domain_uuid, domain_name: only watch this domain.
        heartbeat_interval_s: heartbeat period asked of agents (0.1 to 300 s).
        liveness_factor: missed heartbeat periods before an agent is unreachable.
        backoff: reconnect delays.
        credentials: channel credentials for TLS (``client_credentials(...)``);
            plaintext when ``None``.
        token: bearer token for agents with a token file; sent on every call.
        timeout_s: deadline of one-shot calls (``fetch_snapshot``, ``find``).
        rng: randomness for backoff jitter (seed it in tests).
    """

    def __init__(
        self,
        targets: Sequence[str] | None = None,
        *,
        include_finished: bool = False,
        domain_uuid: str = "",
        domain_name: str = "",
        heartbeat_interval_s: float = 5.0,
        liveness_factor: float = 3.0,
        backoff: Backoff = DEFAULT_BACKOFF,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        channel_options: Sequence[ChannelOption] = (),
        timeout_s: float = 10.0,
        rng: _random.Random | None = None,
    ) -> None:
        self.targets = resolve_targets(targets, os.environ)
        self._include_finished = include_finished
        self._config = StreamConfig(
            domain_uuid=domain_uuid,
            domain_name=domain_name,
            heartbeat_interval_s=heartbeat_interval_s,
            liveness_factor=liveness_factor,
            backoff=backoff,
            credentials=credentials,
            token=token,
            channel_options=tuple(channel_options),
        )
        self._timeout_s = timeout_s
        self._rng = rng or _random.Random()
        self._state = FleetState(self.targets, include_finished=include_finished)
        self._watching = False

    def snapshot(self) -> FleetSnapshot:
        """The fleet as last seen by ``watch`` (empty before it starts)."""
        return self._state.snapshot()

    def client(self, target: str) -> AgentClient:
        """An ``AgentClient`` for one of the fleet's agents, with the fleet's settings."""
        return AgentClient(
            target,
            credentials=self._config.credentials,
            token=self._config.token,
            timeout_s=self._timeout_s,
            options=self._config.channel_options,
        )

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[Update]]:
        """Watch every agent; yields the merged stream of updates.

        The stream never ends by itself: leave the ``async with`` (or break out of the
        loop and leave it) to stop. Unreachable agents are retried with backoff and
        reported as ``AgentUpdate``; the other agents keep flowing.
        """
        if self._watching:
            raise RuntimeError("this Fleet is already being watched")
        self._watching = True
        queue: asyncio.Queue[Update] = asyncio.Queue(_QUEUE_SIZE)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(
                        follow_agent(
                            t, self._state, queue.put, self._config, random=self._rng.random
                        ),
                        name=f"migwatch-follow-{t}",
                    )
                    for t in self.targets
                ]
                try:
                    yield _Updates(queue)
                finally:
                    for task in tasks:
                        task.cancel()
        finally:
            self._watching = False
            for t in self.targets:
                self._state.disconnected(t, "not watching", time.time())

    async def fetch_snapshot(self, *, include_finished: bool | None = None) -> FleetSnapshot:
        """One-shot: list every agent at once and join the answers.

        Unreachable agents are marked so in the result instead of raising.
        """
        finished = self._include_finished if include_finished is None else include_finished
        # One-shot: keep every finished record the agents retain.
        state = FleetState(self.targets, include_finished=finished, finished_keep=1_000_000)
        found, failed = await self._gather(
            lambda c: c.list_with_status(
                domain_uuid=self._config.domain_uuid,
                domain_name=self._config.domain_name,
                include_finished=finished,
            )
        )
        for target, (migrations, status) in found:
            state.apply_list(target, migrations, status, time.time())
        for exc in failed:
            state.disconnected(exc.target, exc.message, time.time())
        return state.snapshot()

    async def find(self, migration_id: str) -> tuple[str, Migration]:
        """The agent holding ``migration_id`` (or a unique prefix of one), asking all
        agents at once.

        Raises:
            NotFound: no reachable agent has it (the message names unreachable ones).
            InvalidArgument: several migrations match.
            AgentUnavailable: the fleet is a single agent and it is unreachable.
        """
        found, failed = await self._gather(lambda c: self._find_on(c, migration_id))
        matches = [(t, m) for t, ms in found for m in ms]
        exact = [(t, m) for t, m in matches if m.id == migration_id]
        if len(exact) == 1 or len(matches) == 1:
            return (exact or matches)[0]
        if matches:
            where = ", ".join(f"{m.id} on {t}" for t, m in matches[:5])
            raise InvalidArgument("", f"{migration_id!r} matches several migrations: {where}")
        if len(self.targets) == 1 and failed:
            raise failed[0]
        asked = len(self.targets) - len(failed)
        message = f"no migration {migration_id!r} on {asked} agent(s)"
        if failed:
            message += "; no answer from " + "; ".join(str(e) for e in failed)
        raise NotFound("", message)

    async def estimate(
        self,
        domain: str,
        *,
        bandwidth: int | None = None,
        max_downtime_s: float | None = None,
        copy_storage: bool = False,
        auto_converge: bool = False,
    ) -> tuple[str, MigrationEstimate]:
        """Ask every agent; the one whose host runs ``domain`` answers.

        Raises:
            NotFound: no reachable agent runs it (the message names unreachable ones).
        """
        found, failed = await self._gather(
            lambda c: c.estimate(
                domain,
                bandwidth=bandwidth,
                max_downtime_s=max_downtime_s,
                copy_storage=copy_storage,
                auto_converge=auto_converge,
            )
        )
        if found:
            return found[0]
        real = [e for e in failed if not isinstance(e, NotFound)]
        if len(self.targets) == 1 or len(real) == len(failed):
            raise failed[0]  # the agent's own words say best what is wrong
        message = f"no agent runs a domain {domain!r}"
        if real:
            message += "; no answer from " + "; ".join(str(e) for e in real)
        raise NotFound("", message)

    @staticmethod
    async def _find_on(client: AgentClient, migration_id: str) -> list[Migration]:
        try:
            return [await client.get(migration_id)]
        except (NotFound, InvalidArgument):
            pass  # not here, or not a whole id: try it as a prefix
        listed = await client.list(include_finished=True)
        return [m for m in listed if m.id.startswith(migration_id)]

    async def _gather(
        self, call: Callable[[AgentClient], Awaitable[_T]]
    ) -> tuple[list[tuple[str, _T]], list[MigwatchError]]:
        """``call`` on every agent concurrently: (target, result) pairs and failures."""
        results: list[tuple[str, _T]] = []
        failed: list[MigwatchError] = []

        async def one(target: str) -> None:
            async with self.client(target) as c:
                try:
                    results.append((target, await call(c)))
                except MigwatchError as exc:
                    failed.append(exc)

        async with asyncio.TaskGroup() as tg:
            for t in self.targets:
                tg.create_task(one(t))
        return results, failed
