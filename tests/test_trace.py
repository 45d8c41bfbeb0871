"""Tests for the trace reader (agent/backends/trace.py) and what a trace says (tracefacts.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from migwatch.agent.backends.trace import SourceStats, TraceError, read_trace
from migwatch.agent.backends.tracefacts import (
    limits_at,
    memory_size_hint,
    preflight_of,
    source_steps,
    true_duration_s,
)
from migwatch.agent.model import MIB, Limits

# Copies of the project's first ten recordings (bench/traces/shared/INDEX.md).
SHARED = Path(__file__).resolve().parents[1] / "bench" / "traces" / "shared"


def shared(name: str) -> Path:
    return SHARED / name


def write(tmp_path: Path, lines: list[object]) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


META = {
    "type": "meta",
    "t": 1.0,
    "dt": None,
    "scenario": "x",
    "bandwidth_mib_s": 50,
    "params": {"bandwidth": 50},
    "flag_names": ["VIR_MIGRATE_LIVE"],
    "guest": {"rate": 9},
}
SRC = {
    "type": "stats",
    "t": 2.0,
    "dt": 0.25,
    "host": "A",
    "role": "src",
    "job_type": "UNBOUNDED",
    "stats": {"type": 2, "time_elapsed": 250, "memory_total": 10, "memory_iteration": 1},
}


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    """A line that is not JSON raises TraceError naming path:line."""
    path = write(tmp_path, [META, SRC, "{not json"])
    with pytest.raises(TraceError, match=rf"{path}:3: not JSON"):
        read_trace(path)


def test_wrong_field_type_names_file_and_line(tmp_path: Path) -> None:
    """A known line whose `stats` is not an object is reported with its line number."""
    path = write(tmp_path, [META, {**SRC, "stats": [1, 2]}])
    with pytest.raises(TraceError, match=rf"{path}:2: 'stats' is not an object"):
        read_trace(path)


def test_non_object_line_is_an_error(tmp_path: Path) -> None:
    """A JSON value that is not an object is malformed."""
    path = write(tmp_path, [META, "[1, 2]"])
    with pytest.raises(TraceError, match=":2: not a JSON object"):
        read_trace(path)


def test_unknown_keys_and_line_types_are_ignored(tmp_path: Path) -> None:
    """Extra keys and unknown line types are skipped: the format can grow."""
    path = write(
        tmp_path,
        [
            {**META, "future": 1},
            {**SRC, "new_key": [1]},
            {"type": "telemetry", "t": 3.0, "x": 1},
            "",
        ],
    )
    trace = read_trace(path)
    assert trace.meta is not None and trace.meta.bandwidth_bps == 50 * MIB
    assert len(trace.records) == 1
    rec = trace.records[0]
    assert isinstance(rec, SourceStats) and rec.sample is not None
    assert rec.sample.elapsed_s == 0.25


def test_true_duration_of_shared_converge_trace() -> None:
    """The converge trace's true duration is its JOB_COMPLETED time_elapsed (20.968 s)."""
    trace = read_trace(shared("converge.jsonl"))
    assert true_duration_s(trace) == pytest.approx(20.968)
    assert memory_size_hint(trace) == 1074274304


def test_aborted_trace_has_no_true_duration() -> None:
    """An aborted migration has no true duration, and its CANCELLED sample is skipped."""
    trace = read_trace(shared("nonconverge-abort.jsonl"))
    assert true_duration_s(trace) is None
    elapsed = [s.sample.elapsed_s for s in source_steps(trace)]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 29.0


def test_limits_follow_actions(tmp_path: Path) -> None:
    """speed (MiB/s) and downtime (ms) actions change the limits from their dt on."""
    path = write(
        tmp_path,
        [
            {**META, "flag_names": ["VIR_MIGRATE_LIVE", "VIR_MIGRATE_POSTCOPY"]},
            {
                "type": "action",
                "t": 5.0,
                "dt": 4.0,
                "action": "downtime",
                "arg": 3000,
                "result": "ok",
            },
            {"type": "action", "t": 6.0, "dt": 5.0, "action": "speed", "arg": 100, "result": "ok"},
            {"type": "action", "t": 7.0, "dt": 6.0, "action": "speed", "arg": 7, "result": "err"},
        ],
    )
    trace = read_trace(path)
    assert limits_at(trace, 1.0) == Limits(0.3, 50 * MIB, True)
    assert limits_at(trace, 4.5) == Limits(3.0, 50 * MIB, True)
    assert limits_at(trace, 9.0) == Limits(3.0, 100 * MIB, True)


def test_postcopy_steps_and_bandwidth() -> None:
    """Samples after a successful postcopy action are marked post-copy, with its bandwidth."""
    trace = read_trace(shared("postcopy.jsonl"))
    steps = list(source_steps(trace))
    pc = [s for s in steps if s.postcopy]
    assert pc and not steps[0].postcopy
    assert pc[0].dt is not None and pc[0].dt >= 20.226
    assert pc[-1].sample.iteration == 3 and pc[-1].sample.postcopy_requests > 0
    assert pc[0].limits.postcopy_allowed
    assert pc[0].limits.postcopy_bandwidth_bps == 20 * MIB


def test_preflight_readings() -> None:
    """dirtyrate lines become a Preflight mapping period -> MiB/s."""
    trace = read_trace(shared("pf-easy1.jsonl"))
    pf = preflight_of(trace)
    assert pf is not None and pf.rates == {1.0: 20.0, 2.0: 16.0, 4.0: 18.0}
    assert preflight_of(read_trace(shared("converge.jsonl"))) is None


def test_free_memory_comes_from_the_memstats_balloon_figures(tmp_path: Path) -> None:
    """`free_of` reads the guest's free memory (balloon statistics `unused`, KiB) from the
    memstats line, beside `rss`; a guest without the balloon driver reports none."""
    from migwatch.agent.backends.tracefacts import free_of, resident_of

    mem = {"type": "memstats", "t": 1.5, "dt": None, "host": "A"}
    with_balloon = write(tmp_path, [META, {**mem, "stats": {"rss": 900_000, "unused": 300_000}}])
    trace = read_trace(with_balloon)
    assert free_of(trace) == 300_000 * 1024 and resident_of(trace) == 900_000 * 1024
    assert free_of(read_trace(write(tmp_path, [META, {**mem, "stats": {"rss": 900_000}}]))) is None
