"""Shared fixtures: a real agent on a free 127.0.0.1 port, and a channel and stub to it.

In-process (one event loop per test, shared by the agent and the client)::

    @pytest.mark.asyncio
    async def test_x(agent, agent_target, stub): ...

* ``agent``: a started ``migwatch.agent.serve.server.Agent`` (``agent.port``, ``agent.hub``);
  stopped after the test. Configure it by overriding ``agent_config`` (an ``AgentConfig``)
  and/or ``agent_backend`` (a ``Backend``, or None for the one the config names) in a
  test module or class.
* ``agent_target``: ``"127.0.0.1:PORT"`` of that agent.
* ``channel`` / ``stub``: a ``grpc.aio`` channel to it and a ``MigrationServiceStub``.

As a subprocess (the real ``python -m migwatch.agent``)::

    def test_y(spawn_agent):
        sub = spawn_agent("--sim-speed", "20")   # sub.proc, sub.target, sub.output()

``spawn_agent`` picks a free port, waits until the agent's health check says SERVING,
and kills whatever is still running after the test.
"""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from migwatch.agent.backends.protocol import Backend
from migwatch.agent.config import AgentConfig
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from migwatch.agent.serve.server import Agent

    from lab.bus import Broker

FAST_SCENARIOS = ("converging", "not-converging")


@pytest.fixture
def agent_config() -> AgentConfig:
    """A simulated agent on a free port, 20x faster than real time, sampling every 50 ms."""
    return AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=FAST_SCENARIOS,
        simulated_speed=20.0,
        sample_interval_s=0.05,
        grace_s=0.5,
    )


@pytest.fixture
def agent_backend() -> Backend | None:
    """The backend to run instead of the one ``agent_config`` names; None: the named one."""
    return None


@pytest_asyncio.fixture(loop_scope="function")
async def agent(agent_config: AgentConfig, agent_backend: Backend | None) -> AsyncIterator[Agent]:
    """A started in-process agent, stopped after the test."""
    from migwatch.agent.serve.server import (
        running_agent,  # not at import: pure tests need none of it
    )

    async with running_agent(agent_config, agent_backend) as started:
        yield started


@pytest.fixture
def agent_target(agent: Agent) -> str:
    """The agent's address, for grpc.aio channels, the client, or grpcurl."""
    return f"127.0.0.1:{agent.port}"


@pytest_asyncio.fixture(loop_scope="function")
async def channel(agent_target: str) -> AsyncIterator[grpc.aio.Channel]:
    """An insecure grpc.aio channel to ``agent``, closed after the test."""
    async with grpc.aio.insecure_channel(agent_target) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.MigrationServiceStub:
    """A MigrationService stub on ``channel``."""
    return pb_grpc.MigrationServiceStub(channel)


# -- subprocess agents ---------------------------------------------------------------------
def free_port() -> int:
    """A port nobody listens on right now (the OS's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SpawnedAgent:
    """An agent subprocess; its stdout and stderr go to ``log`` (a pipe could fill and block it)."""

    proc: subprocess.Popen[bytes]
    target: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_serving(agent: SpawnedAgent, timeout_s: float = 15.0) -> None:
    """Poll the standard health service until SERVING; fail if the process dies first."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(agent.target) as chan:
        health = health_pb2_grpc.HealthStub(chan)
        while True:
            if agent.proc.poll() is not None:
                pytest.fail(
                    f"agent exited with {agent.proc.returncode} before serving:\n{agent.output()}"
                )
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"agent on {agent.target} not SERVING after {timeout_s}s")
            time.sleep(0.05)


SpawnAgent = Callable[..., SpawnedAgent]


@pytest.fixture
def unused_port() -> int:
    """A free 127.0.0.1 port, e.g. to write into a config file before spawning an agent."""
    return free_port()


@pytest.fixture
def spawn_agent(tmp_path: Path) -> Iterator[SpawnAgent]:
    """Start ``python -m migwatch.agent ARGS --listen 127.0.0.1:<free>`` and wait until it serves.

    Keyword arguments: ``port`` where it will listen (default: a free one), ``listen_flag``
    False when a config file names the port, ``wait`` False to skip the health poll.
    Anything still running after the test is killed.
    """
    spawned: list[SpawnedAgent] = []

    def spawn(
        *args: str, port: int | None = None, listen_flag: bool = True, wait: bool = True
    ) -> SpawnedAgent:
        port = port or free_port()
        target = f"127.0.0.1:{port}"
        argv = [sys.executable, "-m", "migwatch.agent", *args]
        if listen_flag:
            argv += ["--listen", target]
        log = tmp_path / f"agent-{len(spawned)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        agent = SpawnedAgent(proc, target, log)
        spawned.append(agent)
        if wait:
            wait_serving(agent)
        return agent

    yield spawn
    for agent in spawned:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(timeout=10)


# -- a private RabbitMQ broker (lab/bus.py) ------------------------------------------------
@pytest.fixture(scope="session")
def bus_broker() -> Iterator[Broker]:
    """One private rabbitmq-server for the session (installed if missing; ~6 s to start),
    on 127.0.0.1 ports of its own; always stopped, on failure too."""
    from lab.bus import Broker

    broker = Broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class BusListener:
    """oslo.messaging's own notification listener (threading executor) on one topic: what
    any OpenStack consumer would receive. ``events`` holds (received_at, publisher_id,
    event_type, payload)."""

    def __init__(self, url: str, topic: str, config_file: str = "") -> None:
        self.topic = topic
        from migwatch.agent.notify.publisher import import_oslo_messaging
        from oslo_config import cfg

        om = import_oslo_messaging()
        self.events: list[tuple[float, str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        conf = cfg.ConfigOpts()
        conf([], default_config_files=[config_file] if config_file else [], default_config_dirs=[])
        self._transport = om.get_notification_transport(conf, url=url)
        listener = self

        class Endpoint:
            def info(
                self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any
            ) -> None:
                with listener._lock:
                    listener.events.append((time.time(), publisher_id, event_type, payload))

        self._listener = om.get_notification_listener(
            self._transport, [om.Target(topic=topic)], [Endpoint()], executor="threading"
        )
        self._listener.start()

    def snapshot(self) -> list[tuple[float, str, str, dict[str, Any]]]:
        with self._lock:
            return list(self.events)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        """The ``migwatch_object.data`` of every event of that type, in arrival order."""
        return [p["migwatch_object.data"] for _, _, e, p in self.snapshot() if e == event_type]

    def close(self) -> None:
        self._listener.stop()
        self._listener.wait()
        self._transport.cleanup()


@pytest.fixture
def collect_bus_garbage() -> Iterator[None]:
    """When the broker dies, oslo.messaging drops the connection's socket in a reference
    cycle; collect it after the test that did that, where it is expected, instead of letting
    its ResourceWarning fail whichever later test the collector happens to run in."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def bus_listener(bus_broker: Broker, request: pytest.FixtureRequest) -> Iterator[BusListener]:
    """A listener on a topic of this test's own (a session broker keeps other tests' queues)."""
    topic = f"mwtest_{request.node.name[:40]}_{time.monotonic_ns()}"
    listener = BusListener(bus_broker.url, topic)
    try:
        yield listener
    finally:
        listener.close()
