"""The client against real agents over real gRPC on 127.0.0.1: fleet merge, joins, re-sync,
liveness, restarts, controls, the CLI and the blocking wrapper."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from migwatch.agent.backends.protocol import (
    Backend,
    Ending,
    MigrationInfo,
    Observation,
    ObservationSink,
    StatusSink,
)
from migwatch.agent.config import AgentConfig
from migwatch.agent.errors import MigrationGone
from migwatch.agent.model import Direction, DomainFacts, HostState, JobSample
from migwatch.agent.model import Phase as AgentPhase
from migwatch.client import (
    AgentClient,
    AgentUpdate,
    Backoff,
    Fleet,
    FleetMigration,
    FleetSnapshot,
    InvalidArgument,
    MigrationUpdate,
    NotFound,
    Phase,
    Update,
    cli,
    sync,
)

if TYPE_CHECKING:
    from migwatch.agent.serve.server import Agent

    from tests.conftest import SpawnAgent

pytestmark = pytest.mark.asyncio(loop_scope="function")

# Quick migrations finish every ~0.6 s at 20x; not-converging ones stay active.
QUICK = ("quick", "quick", "not-converging")
FAST_FLEET = {
    "heartbeat_interval_s": 0.2,  # liveness bound: 3 x 0.2 s
    "backoff": Backoff(initial_s=0.05, maximum_s=0.2),
    "rng": random.Random(1),
    "timeout_s": 5.0,
}


@pytest.fixture
def agent_config() -> AgentConfig:
    """The conftest ``agent``: quick simulated migrations, 20x faster, sampled every 50 ms."""
    return AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=QUICK,
        simulated_speed=20.0,
        sample_interval_s=0.05,
        grace_s=0.2,
    )


async def until(
    updates: AsyncIterator[Update], pred: Callable[[Update], bool], timeout: float = 10.0
) -> list[Update]:
    """Consume updates until one satisfies ``pred``; return all consumed, that one last."""
    seen: list[Update] = []
    async with asyncio.timeout(timeout):
        async for u in updates:
            seen.append(u)
            if pred(u):
                return seen
    raise AssertionError("the update stream ended")


def is_final(u: Update) -> bool:
    return isinstance(u, MigrationUpdate) and u.migration.final


def nth_final(n: int) -> Callable[[Update], bool]:
    """A predicate true at the n-th final update it is shown."""
    count = 0

    def pred(u: Update) -> bool:
        nonlocal count
        count += is_final(u)
        return count >= n

    return pred


def agent_state(
    target: str, *, reachable: bool, synced: bool | None = None
) -> Callable[[Update], bool]:
    def pred(u: Update) -> bool:
        return (
            isinstance(u, AgentUpdate)
            and u.agent == target
            and u.state.reachable is reachable
            and (synced is None or u.state.synced is synced)
        )

    return pred


def final_counts(updates: list[Update]) -> Counter[tuple[str, str]]:
    return Counter(
        (u.agent, u.migration.id)
        for u in updates
        if isinstance(u, MigrationUpdate) and u.migration.final
    )


# -- helpers: a second agent, a scripted backend, a TCP relay -----------------------------


@pytest_asyncio.fixture(loop_scope="function")
async def two_agents() -> AsyncIterator[list[str]]:
    """Two in-process simulated agents reporting as sim-a and sim-b."""
    from migwatch.agent.serve.server import running_agent

    configs = [
        AgentConfig(
            listen="127.0.0.1:0",
            host_name=name,
            simulated_scenarios=QUICK,
            simulated_speed=20.0,
            sample_interval_s=0.05,
            grace_s=0.2,
        )
        for name in ("sim-a", "sim-b")
    ]
    async with running_agent(configs[0]) as a, running_agent(configs[1]) as b:
        yield [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]


class ScriptedBackend:
    """A backend the test drives by hand: ``push`` reports one observation."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._observe: ObservationSink | None = None
        self.ready = asyncio.Event()

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def host(self) -> str:
        return self._host

    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        self._observe = observe
        status(HostState.OK, "")
        self.ready.set()
        await asyncio.Event().wait()

    def push(self, info: MigrationInfo, phase: AgentPhase, sample: JobSample | None = None) -> None:
        assert self._observe is not None
        self._observe(Observation(info=info, now=time.time(), phase=phase, sample=sample))

    async def abort(self, domain_uuid: str) -> None:
        raise MigrationGone("scripted")

    async def force_complete(self, domain_uuid: str) -> bool:
        raise MigrationGone("scripted")

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        raise MigrationGone("scripted")

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending | None:
        return None  # nothing was in flight before this agent

    async def describe(self, domain: str) -> DomainFacts:
        raise MigrationGone(f"domain {domain} is not running on {self.host}")

    async def guests(self) -> tuple[str, ...]:
        return ()

    async def close(self) -> None:
        pass


if TYPE_CHECKING:  # the fake satisfies the seam every backend implements
    _scripted: Backend = ScriptedBackend("h")


class Relay:
    """A TCP relay in front of an agent that a test can cut (reset) or freeze (partition)."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers += [writer, up_writer]
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._tasks.difference_update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # frozen: hold the bytes, keep the socket open
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        """Reset every relayed connection, as a crashed middlebox would."""
        for w in self._writers:
            w.transport.abort()
        self._writers.clear()

    def freeze(self) -> None:
        """Stop forwarding while keeping connections open: a silent partition."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        self.thaw()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


@pytest_asyncio.fixture(loop_scope="function")
async def relay(agent_target: str) -> AsyncIterator[tuple[Relay, str]]:
    """A relay to the conftest ``agent``, and the target to dial through it."""
    r = Relay(agent_target)
    target = await r.start()
    yield r, target
    await r.close()


# -- fleet ------------------------------------------------------------------------------


async def test_fleet_merges_the_streams_of_two_agents(two_agents: list[str]) -> None:
    """One watch over two agents yields updates tagged with each target, joined in one state."""
    fleet = Fleet(two_agents, **FAST_FLEET)  # type: ignore[arg-type]
    agents_seen: set[str] = set()
    async with fleet.watch() as updates:
        async with asyncio.timeout(10):
            async for u in updates:
                if isinstance(u, MigrationUpdate):
                    agents_seen.add(u.agent)
                synced = {a.target for a in fleet.snapshot().agents if a.synced}
                if agents_seen == synced == set(two_agents):
                    break
        snap = fleet.snapshot()
    assert {a.target for a in snap.agents if a.reachable and a.synced} == set(two_agents)
    assert {m.source_agent for m in snap.migrations} == set(two_agents)
    assert {m.primary.agent_host for m in snap.migrations} == {"sim-a", "sim-b"}


async def test_fleet_joins_the_outgoing_and_incoming_ends_of_one_migration() -> None:
    """The source agent's OUTGOING end and the destination agent's INCOMING end become one
    record."""
    from migwatch.agent.serve.server import running_agent

    src, dst = ScriptedBackend("hv-a"), ScriptedBackend("hv-b")
    config = AgentConfig(listen="127.0.0.1:0", grace_s=0.2)
    domain = "a1823c35-4213-4f58-9463-51fe8ccabbf6"
    started = time.time()

    def info(direction: Direction) -> MigrationInfo:
        return MigrationInfo(domain, "db-7", "hv-a", "hv-b", direction, started)

    sample = JobSample(
        elapsed_s=2.0,
        memory_total=1 << 30,
        memory_processed=1 << 29,
        memory_remaining=1 << 29,
        memory_bps=100 << 20,
        iteration=1,
    )
    async with running_agent(config, src) as a, running_agent(config, dst) as b:
        await src.ready.wait()
        await dst.ready.wait()
        ta, tb = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        src.push(info(Direction.OUTGOING), AgentPhase.PRECOPY, sample)
        dst.push(info(Direction.INCOMING), AgentPhase.PRECOPY)
        fleet = Fleet([ta, tb], **FAST_FLEET)  # type: ignore[arg-type]
        async with fleet.watch() as updates:
            await until(updates, lambda _: len(_both_ends(fleet.snapshot())) == 1)
            (record,) = _both_ends(fleet.snapshot())
            assert (record.source_agent, record.destination_agent) == (ta, tb)
            assert record.domain_name == "db-7" and record.phase is Phase.PRECOPY
            assert record.source is not None and record.source.memory.total_bytes == 1 << 30

            src.push(info(Direction.OUTGOING), AgentPhase.COMPLETED, sample)
            dst.push(info(Direction.INCOMING), AgentPhase.COMPLETED)
            # Wait on the updates consumed, not on the snapshot: the fleet's state can show
            # an end whose update is still queued behind this consumer.
            finals: set[str] = set()

            def both_ends_final(u: Update) -> bool:
                if isinstance(u, MigrationUpdate) and u.migration.final:
                    finals.add(u.agent)
                return finals == {ta, tb}

            seen = await until(updates, both_ends_final, timeout=5)
            snap = fleet.snapshot()
    assert {agent for agent, _ in final_counts(seen)} == {ta, tb}
    assert all(n == 1 for n in final_counts(seen).values()), final_counts(seen)
    assert snap.migrations == ()
    (finished,) = snap.finished
    assert finished.phase is Phase.COMPLETED and finished.destination is not None


def _both_ends(snap: FleetSnapshot) -> list[FleetMigration]:
    return [m for m in snap.migrations if m.source is not None and m.destination is not None]


async def test_resync_after_a_cut_connection_emits_no_final_twice(
    agent: Agent, relay: tuple[Relay, str]
) -> None:
    """After a reset the client re-syncs from a snapshot that re-sends old finals; none repeats."""
    proxy, target = relay
    fleet = Fleet([target], **FAST_FLEET)  # type: ignore[arg-type]
    seen: list[Update] = []
    async with fleet.watch() as updates:
        seen += await until(updates, nth_final(2))
        proxy.cut()
        seen += await until(updates, agent_state(target, reachable=False))
        seen += await until(updates, agent_state(target, reachable=True, synced=True))
        seen += await until(updates, is_final)
    counts = final_counts(seen)
    assert counts and max(counts.values()) == 1, counts
    # The re-sync snapshot really did carry the earlier finals (the agent retains them).
    async with AgentClient(f"127.0.0.1:{agent.port}") as c:
        retained = {m.id for m in await c.list(include_finished=True) if m.final}
    assert {mid for _, mid in list(counts)[:2]} <= retained


async def test_partitioned_agent_is_marked_unreachable_within_the_liveness_bound(
    agent: Agent, relay: tuple[Relay, str]
) -> None:
    """A silent partition is noticed after ~3 missed heartbeats, then the agent recovers on thaw."""
    proxy, target = relay
    fleet = Fleet([target], **FAST_FLEET)  # type: ignore[arg-type]
    async with fleet.watch() as updates:
        await until(updates, agent_state(target, reachable=True, synced=True))
        proxy.freeze()
        frozen_at = time.monotonic()
        seen = await until(updates, agent_state(target, reachable=False))
        noticed_after = time.monotonic() - frozen_at
        down = fleet.snapshot().agents[0]
        assert not down.reachable and "heartbeats missed" in down.error
        assert all(m.stale for m in fleet.snapshot().migrations)
        proxy.thaw()
        await until(updates, agent_state(target, reachable=True, synced=True))
    assert isinstance(seen[-1], AgentUpdate)
    assert 0.3 <= noticed_after < 2.0, noticed_after  # 3 x 0.2 s, plus scheduling slack


async def test_client_reconnects_after_its_agent_process_restarts(
    spawn_agent: SpawnAgent, unused_port: int
) -> None:
    """Kill -9 the agent, start it again on the same port: the fleet re-syncs, no final repeats."""
    args = (
        "--scenario",
        "quick",
        "--scenario",
        "not-converging",
        "--sim-speed",
        "20",
        "--sample-interval",
        "0.05",
    )
    first = await asyncio.to_thread(spawn_agent, *args, port=unused_port)
    target = first.target
    fleet = Fleet([target], **FAST_FLEET)  # type: ignore[arg-type]
    seen: list[Update] = []
    async with fleet.watch() as updates:
        seen += await until(updates, is_final)
        first.proc.send_signal(signal.SIGKILL)
        seen += await until(updates, agent_state(target, reachable=False))
        await asyncio.to_thread(first.proc.wait)
        await asyncio.to_thread(spawn_agent, *args, port=unused_port)
        seen += await until(updates, agent_state(target, reachable=True, synced=True), timeout=15)
        seen += await until(updates, is_final)
        active_after = {m.id for m in fleet.snapshot().migrations}
    counts = final_counts(seen)
    assert len(counts) >= 2 and max(counts.values()) == 1, counts
    # The old agent's active migrations are gone: reported vanished, not left dangling.
    vanished = {u.migration.id for u in seen if u.kind == "vanished"}  # type: ignore[union-attr]
    assert not (vanished & active_after)


async def test_leaving_watch_unsubscribes_from_the_agent(agent: Agent, agent_target: str) -> None:
    """Cancelling the fleet mid-stream leaves no subscriber registered on the agent."""
    fleet = Fleet([agent_target], **FAST_FLEET)  # type: ignore[arg-type]
    async with fleet.watch() as updates:
        await until(updates, agent_state(agent_target, reachable=True, synced=True))
        assert agent.hub.subscriber_count == 1
    async with asyncio.timeout(5):
        while agent.hub.subscriber_count:
            await asyncio.sleep(0.02)


async def test_unreachable_agent_does_not_stop_the_others(
    agent_target: str, unused_port: int
) -> None:
    """A dead target is reported unreachable while the live one keeps streaming."""
    dead = f"127.0.0.1:{unused_port}"
    fleet = Fleet([agent_target, dead], **FAST_FLEET)  # type: ignore[arg-type]
    async with fleet.watch() as updates:
        seen = await until(updates, agent_state(dead, reachable=False))
        seen += await until(
            updates, lambda u: isinstance(u, MigrationUpdate) and u.agent == agent_target
        )
    down = next(u for u in seen if isinstance(u, AgentUpdate) and u.agent == dead)
    assert "refused" in down.state.error.lower() or "connect" in down.state.error.lower()


# -- one agent: controls and errors -------------------------------------------------------


async def test_agent_client_controls_and_error_mapping(agent_target: str) -> None:
    """Calls return client records; NOT_FOUND and INVALID_ARGUMENT become client errors."""
    async with AgentClient(agent_target, timeout_s=5) as c:
        async with asyncio.timeout(5):
            while not (
                active := [m for m in await c.list() if m.domain_name.startswith("sim-not")]
            ):
                await asyncio.sleep(0.05)
        m = active[0]
        assert (await c.get(m.id)).id == m.id
        limited = await c.set_limits(m.id, max_downtime_s=0.5, max_bandwidth=200 << 20)
        assert limited.max_downtime_s == pytest.approx(0.5)
        aborted = await c.abort(m.id)
        assert aborted.id == m.id
        with pytest.raises(NotFound, match=agent_target):
            await c.get(m.id.replace(".out.", ".in."))
        with pytest.raises(InvalidArgument):
            await c.get("not-an-id")
        with pytest.raises(InvalidArgument, match="1 MiB/s"):
            await c.set_limits(m.id, max_bandwidth=10)


async def test_fleet_find_accepts_a_unique_id_prefix(agent_target: str) -> None:
    """find() resolves an id prefix across agents, and says not found in one line."""
    fleet = Fleet([agent_target], **FAST_FLEET)  # type: ignore[arg-type]
    snap = await fleet.fetch_snapshot()
    m = snap.migrations[0]
    target, found = await fleet.find(m.id[:13])
    assert (target, found.id) == (agent_target, m.id)
    with pytest.raises(NotFound, match="no migration 'zzzz'"):
        await fleet.find("zzzz")


# -- CLI and the blocking wrapper, in their own event loops -------------------------------


async def test_cli_list_json_prints_one_object_per_line(
    agent_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``migwatch list --json`` prints one JSON object per migration end, tagged with its agent."""
    code = await asyncio.to_thread(cli.main, ["--agent", agent_target, "list", "--json"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out
    for line in out:
        data = json.loads(line)
        assert data["agent"] == agent_target and data["id"] and data["direction"] == "outgoing"


async def test_cli_get_bad_id_is_a_one_line_error_with_status_1(agent_target: str) -> None:
    """``migwatch get`` with an unknown id prints one line on stderr, exits 1, no traceback."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "migwatch.client.cli",
        "--agent",
        agent_target,
        "get",
        "nope",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and out == b""
    assert len(lines) == 1 and lines[0].startswith("migwatch: ") and "nope" in lines[0], lines


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["set-limits", "x", "--max-downtime", "500"], "give a unit"),
        (["set-limits", "x"], "--max-downtime and/or --max-bandwidth"),
        (["--agent", "nohost", "list"], "bad agent address"),
        (["frobnicate"], "invalid choice"),
    ],
)
async def test_cli_usage_errors_are_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments exit 1 with one line naming the problem, before any agent is called."""
    code = await asyncio.to_thread(cli.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and needle in err[0], err


@pytest.mark.parametrize("command", [["get", "x"], ["list"], ["list", "--json"]])
async def test_cli_unreachable_agent_is_a_one_line_error(
    command: list[str], unused_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """An agent nobody listens on gives one line on stderr, nothing on stdout, and status 1."""
    code = await asyncio.to_thread(cli.main, ["--agent", f"127.0.0.1:{unused_port}", *command])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 1 and captured.out == ""
    assert len(err) == 1 and f"127.0.0.1:{unused_port}" in err[0], err


async def test_cli_watch_json_streams_tagged_updates_until_interrupted(agent_target: str) -> None:
    """``migwatch watch --json`` prints JSON lines (agent status, migrations); SIGINT ends it
    quietly."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "migwatch.client.cli", "--agent", agent_target),
        *("watch", "--json", "--heartbeat", "0.2s"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # A runner started in the background (nohup, CI) ignores SIGINT, and the
        # child would inherit that: give it the default disposition back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(lines) < 5:
            lines.append(json.loads(await proc.stdout.readline()))
    proc.send_signal(signal.SIGINT)
    _, err = await proc.communicate()
    assert proc.returncode == 130 and b"Traceback" not in err, err
    assert lines[0]["kind"] == "agent status" and lines[0]["agent"] == agent_target
    assert {line["kind"] for line in lines} <= {"agent status", "migration", "vanished"}
    assert any(line["kind"] == "migration" for line in lines)


async def test_cli_watch_json_into_a_reader_that_quits_ends_quietly(agent_target: str) -> None:
    """``migwatch watch --json | head -n 1``: the closed pipe ends watch with status 0 and no
    traceback (the error reaches main wrapped in the fleet's TaskGroup)."""
    read_end, write_end = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "migwatch.client.cli", "--agent", agent_target),
        *("watch", "--json", "--heartbeat", "0.2s"),
        stdout=write_end,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = await asyncio.to_thread(reader.readline)
    # The reader is gone: the next line watch prints hits a broken pipe.
    async with asyncio.timeout(10):
        _, err = await proc.communicate()
    assert json.loads(first)["kind"] == "agent status"
    assert proc.returncode == 0 and err == b"", err


async def test_sync_wrapper_lists_and_snapshots(agent_target: str, unused_port: int) -> None:
    """The blocking helpers work from plain code and report unreachable agents in the snapshot."""
    migrations = await asyncio.to_thread(sync.list_migrations, agent_target)
    assert migrations and all(m.agent_host for m in migrations)
    dead = f"127.0.0.1:{unused_port}"
    snap = await asyncio.to_thread(sync.fleet_snapshot, [agent_target, dead])
    assert [a.target for a in snap.unreachable()] == [dead]
    assert snap.migrations
    target, found = await asyncio.to_thread(sync.get_migration, migrations[0].id, [agent_target])
    assert (target, found.id) == (agent_target, migrations[0].id)
