"""Stopping: helper tasks end, their failures are not lost, and a cancellation of the
stopping task itself is never swallowed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from migwatch.agent.backends.protocol import Ending, ObservationSink, StatusSink
from migwatch.agent.config import AgentConfig
from migwatch.agent.errors import MigrationGone
from migwatch.agent.model import Direction, DomainFacts, HostState
from migwatch.agent.serve.server import Agent
from migwatch.agent.tasks import stop_task

pytestmark = pytest.mark.asyncio


class SlowToStop:
    """A helper that, once cancelled, takes until ``release`` is set to end."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await self.release.wait()
            raise


async def test_stop_task_ends_a_helper_and_keeps_its_cancellation() -> None:
    """Stopping a helper returns normally once the helper ended cancelled."""
    helper = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    await stop_task(helper)
    assert helper.cancelled()


async def test_stop_task_logs_a_helper_that_failed(caplog: pytest.LogCaptureFixture) -> None:
    """A helper that failed is reported in the log, not raised into the stopping code."""

    async def broken() -> None:
        raise RuntimeError("boom")

    helper = asyncio.create_task(broken(), name="broken-helper")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="migwatch.agent.tasks"):
        await stop_task(helper)
    assert "broken-helper failed while stopping" in caplog.text


async def test_cancelling_the_caller_of_stop_task_propagates() -> None:
    """While it waits for a slow helper, the stopping task can itself be cancelled, and the
    cancellation reaches it (a suppress(CancelledError) would have swallowed it)."""
    slow = SlowToStop()
    helper = asyncio.create_task(slow.run())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(stop_task(helper))
    await asyncio.wait_for(slow.cancelled.wait(), 5)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stopper, 5)
    slow.release.set()
    with pytest.raises(asyncio.CancelledError):
        await helper


class SlowBackend:
    """A Backend whose ``run`` takes until ``slow.release`` to end once cancelled."""

    name = "slow"
    host = "slow-host"

    def __init__(self) -> None:
        self.slow = SlowToStop()
        self.closed = False

    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        status(HostState.OK, "")
        await self.slow.run()

    async def abort(self, domain_uuid: str) -> None:
        raise MigrationGone(domain_uuid)

    async def force_complete(self, domain_uuid: str) -> bool:
        raise MigrationGone(domain_uuid)

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        raise MigrationGone(domain_uuid)

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending | None:
        return None

    async def describe(self, domain: str) -> DomainFacts:
        raise MigrationGone(domain)

    async def guests(self) -> tuple[str, ...]:
        return ()

    async def close(self) -> None:
        self.closed = True


async def test_agent_stop_can_be_cancelled_while_the_backend_stops() -> None:
    """Cancelling Agent.stop() while it waits for the backend task ends stop() with
    CancelledError; the backend is not closed behind the canceller's back."""
    backend = SlowBackend()
    agent = Agent(AgentConfig(listen="127.0.0.1:0", grace_s=0.1), backend)
    await agent.start()
    stopper = asyncio.create_task(agent.stop())
    try:
        await asyncio.wait_for(backend.slow.cancelled.wait(), 10)
        stopper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(stopper, 5)
        assert not backend.closed
    finally:
        backend.slow.release.set()
        await asyncio.gather(stopper, return_exceptions=True)
        if agent._backend_task is not None:
            await asyncio.gather(agent._backend_task, return_exceptions=True)
        await backend.close()
