"""One agent's watch stream, kept alive: reconnect with backoff, re-sync, liveness.

``follow_agent`` runs until cancelled. Each connection gets a fresh channel so our
backoff, not the channel's internal reconnect timer, decides when to retry. Events
go into the pure ``FleetState``; the updates it returns are handed to ``emit``
(which may block: that is the backpressure, and the agent conflates meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc

from .agent_client import AgentClient, ChannelOption
from .auth import check_token
from .backoff import DEFAULT_BACKOFF, Backoff
from .errors import AgentUnavailable, MigwatchError
from .merge import FleetState
from .model import SnapshotComplete, Update


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """How the fleet watches each agent."""

    domain_uuid: str = ""
    domain_name: str = ""
    heartbeat_interval_s: float = 5.0  # asked of the agent; 0.1..300 s
    # An agent that sends nothing for liveness_factor heartbeat intervals counts as dead.
    liveness_factor: float = 3.0
    backoff: Backoff = DEFAULT_BACKOFF
    credentials: grpc.ChannelCredentials | None = None
    token: str | None = field(default=None, repr=False)  # bearer token, sent on every call
    channel_options: Sequence[ChannelOption] = ()

    def __post_init__(self) -> None:
        # The agent rejects other intervals with INVALID_ARGUMENT; say so up front.
        if not 0.1 <= self.heartbeat_interval_s <= 300:
            raise ValueError("heartbeat_interval_s must be within 0.1 to 300 seconds")
        if self.liveness_factor < 1:
            raise ValueError("liveness_factor must be at least 1 (heartbeat intervals)")
        if self.token:
            check_token(self.token)  # here, not in a reconnect loop

    @property
    def liveness_s(self) -> float:
        """Longest silence tolerated on a stream."""
        return self.heartbeat_interval_s * self.liveness_factor


async def follow_agent(
    target: str,
    state: FleetState,
    emit: Callable[[Update], Awaitable[None]],
    config: StreamConfig,
    *,
    random: Callable[[], float],
    clock: Callable[[], float] = time.time,
) -> None:
    """Watch ``target`` forever, feeding ``state`` and emitting its updates.

    Args:
        random: uniform [0, 1) draws for the backoff jitter.
        clock: unix seconds, stamped on agent state changes.
    """
    attempt = 0
    while True:
        state.connecting(target)
        error, synced = await _one_connection(target, state, emit, config, clock)
        for update in state.disconnected(target, error, clock()):
            await emit(update)
        # A connection that got through its snapshot was healthy: start over.
        attempt = 0 if synced else attempt + 1
        await asyncio.sleep(config.backoff.delay(attempt, random()))


async def _one_connection(
    target: str,
    state: FleetState,
    emit: Callable[[Update], Awaitable[None]],
    config: StreamConfig,
    clock: Callable[[], float],
) -> tuple[str, bool]:
    """Run one watch stream to its end; return why it ended and whether it synced."""
    synced = False
    client = AgentClient(
        target,
        credentials=config.credentials,
        token=config.token,
        options=config.channel_options,
    )
    try:
        # include_finished: a re-sync must show what ended while we were away;
        # FleetState hides old finals on the first sync.
        events = client.watch(
            domain_uuid=config.domain_uuid,
            domain_name=config.domain_name,
            include_finished=True,
            heartbeat_interval_s=config.heartbeat_interval_s,
        )
        try:
            while True:
                try:
                    async with asyncio.timeout(config.liveness_s):
                        event = await anext(events)
                except TimeoutError:
                    raise AgentUnavailable(
                        target, f"no message for {config.liveness_s:g} s (heartbeats missed)"
                    ) from None
                except StopAsyncIteration:
                    return "the agent ended the stream", synced
                synced = synced or isinstance(event, SnapshotComplete)
                for update in state.apply(target, event, clock()):
                    await emit(update)
        finally:
            await events.aclose()
    except MigwatchError as exc:
        return exc.message, synced
    finally:
        # Shield: closing must finish even when we are being cancelled.
        await asyncio.shield(client.close())
