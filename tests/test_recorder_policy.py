"""The recorder writes the host's declared migration policy as the flags it stands for."""

from __future__ import annotations

from pathlib import Path

from migwatch.agent.backends.protocol import MigrationInfo
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.backends.trace import read_trace
from migwatch.agent.backends.tracefacts import limits_at
from migwatch.agent.model import Direction, Limits, MigrationPolicy


def test_declared_auto_converge_round_trips_through_a_trace(tmp_path: Path) -> None:
    """A trace recorded under --migration-policy auto-converge replays with auto-converge
    on, so the benchmark and a replaying agent judge it as the recording agent did."""
    recorder = TraceRecorder(
        tmp_path, clock=lambda: 1_800_000_000.0, policy=MigrationPolicy(auto_converge=True)
    )
    info = MigrationInfo(
        domain_uuid="a1823c35-4213-4f58-9463-51fe8ccabbf6",
        domain_name="vm1",
        source_host="h1",
        destination_host="",
        direction=Direction.OUTGOING,
        started_at=1_800_000_000.0,
    )
    recorder.start(info, Limits(max_bandwidth_bps=50 * 2**20), 0.5)
    recorder.close()
    (path,) = tmp_path.glob("*.jsonl")
    trace = read_trace(path)
    assert trace.meta is not None
    assert "VIR_MIGRATE_AUTO_CONVERGE" in trace.meta.flag_names
    limits = limits_at(trace, 0.0)
    assert limits.auto_converge and not limits.postcopy_allowed


def test_resident_and_free_memory_round_trip_through_a_trace(tmp_path: Path) -> None:
    """The agent's recording keeps what it read when it found the job: resident memory and
    the guest's free memory (balloon statistics), so a replay bounds pass 1 as it did."""
    from migwatch.agent.backends.tracefacts import free_of, resident_of

    recorder = TraceRecorder(tmp_path, clock=lambda: 1_800_000_000.0)
    info = MigrationInfo(
        domain_uuid="b2823c35-4213-4f58-9463-51fe8ccabbf6",
        domain_name="vm2",
        source_host="h1",
        destination_host="",
        direction=Direction.OUTGOING,
        started_at=1_800_000_000.0,
        resident_bytes=900 * 2**20,
        free_bytes=300 * 2**20,
    )
    recorder.start(info, Limits(max_bandwidth_bps=50 * 2**20), 0.5)
    recorder.close()
    (path,) = tmp_path.glob("*.jsonl")
    trace = read_trace(path)
    assert resident_of(trace) == 900 * 2**20 and free_of(trace) == 300 * 2**20
