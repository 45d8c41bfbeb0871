"""The sans-I/O libvirt job watcher: tables of what libvirt says and what the agent makes of
it, from the lab's notes (lab/NOTES.md) and its recordings (bench/traces)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from migwatch.agent.backends.libvirt.watcher import (
    FINAL_EVENT_WAIT_S,
    GRACE_WAIT_S,
    DomainState,
    Final,
    JobWatcher,
    Update,
    classify_end,
    detail_name,
    ending_of,
    incoming_event,
    incoming_phase,
    is_incoming_start,
    is_outgoing_migration,
    job_started_at,
    lifecycle_name,
)
from migwatch.agent.backends.protocol import Ending, MigrationInfo
from migwatch.agent.model import MIB, Direction, Limits, Phase

TRACES = Path(__file__).resolve().parent.parent / "bench" / "traces"
INFO = MigrationInfo(
    domain_uuid="9dec1b25-0ce1-4406-9cc1-b1993c9c0764",
    domain_name="lab1",
    source_host="a",
    destination_host="",
    direction=Direction.OUTGOING,
    started_at=1000.0,
)
RUNNING = DomainState(1, 0)
SHUTOFF_MIGRATED = DomainState(5, 3)
# Lifecycle (event, detail) pairs as libvirt numbers them (the traces' "raw").
SUSPENDED_PAUSED, SUSPENDED_MIGRATED, SUSPENDED_POSTCOPY = (3, 0), (3, 1), (3, 7)
RESUMED_UNPAUSED, RESUMED_MIGRATED, RESUMED_POSTCOPY = (4, 0), (4, 1), (4, 3)
STOPPED_DESTROYED, STOPPED_MIGRATED, STOPPED_FAILED = (5, 1), (5, 3), (5, 5)
STARTED_BOOTED, STARTED_MIGRATED = (2, 0), (2, 1)


def stats(
    iteration: int = 1, *, disk_total: int = 0, type_: int = 2, elapsed_ms: int = 5000, **extra: Any
) -> dict[str, Any]:
    """A running source ``jobStats()`` dict (UNBOUNDED, MIGRATION_OUT)."""
    return {"type": type_, "operation": 5, "time_elapsed": elapsed_ms,
            "memory_total": 1074274304, "memory_remaining": 300 * MIB,
            "memory_iteration": iteration, "disk_total": disk_total, **extra}  # fmt: skip


def completed_params(downtime_ms: int = 28) -> dict[str, Any]:
    """JOB_COMPLETED params: no ``type``, the actual downtime, the totals."""
    return {"operation": 5, "time_elapsed": 20985, "downtime": downtime_ms,
            "memory_total": 1074274304, "memory_processed": 1260 * MIB, "memory_remaining": 0,
            "memory_iteration": 7, "memory_constant": 60000, "memory_page_size": 4096}  # fmt: skip


def running(watcher: JobWatcher, job_stats: Mapping[str, Any]) -> Update | None:
    """Feed one running sample the way the backend does: step, then the update."""
    step = watcher.on_stats(job_stats)
    assert not step.over
    return watcher.on_running(step)


# -- phases ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_stats", "phase"),
    [
        (stats(0), Phase.SETUP),  # the first ~0.25 s: counters 0, iteration 0
        (stats(0, disk_total=548 * MIB), Phase.DISK_MIRROR),  # NBD copy before memory
        (stats(1), Phase.PRECOPY),
        (stats(7, type_=1), Phase.PRECOPY),  # BOUNDED counts as running too
    ],
)
def test_a_running_sample_shows_its_phase(job_stats: dict[str, Any], phase: Phase) -> None:
    """A running sample's counters say SETUP, DISK_MIRROR or PRECOPY."""
    update = running(JobWatcher(INFO), job_stats)
    assert update is not None and update.phase is phase and update.sample is not None


@pytest.mark.parametrize(
    ("event", "phase", "switched_over"),
    [
        (SUSPENDED_MIGRATED, Phase.PAUSED, True),  # the switch-over
        (SUSPENDED_POSTCOPY, Phase.POSTCOPY, False),
        (SUSPENDED_PAUSED, Phase.PAUSED, False),  # paused by hand
    ],
)
def test_suspended_events_set_the_phase_and_samples_keep_it(
    event: tuple[int, int], phase: Phase, switched_over: bool
) -> None:
    """SUSPENDED moves the phase to PAUSED or POSTCOPY, published at once, and later samples
    (whose counters cannot show it) keep it."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(3))
    update = watcher.on_lifecycle(*event)
    assert update is not None and update.phase is phase
    assert watcher.switched_over is switched_over
    after = running(watcher, stats(4))
    assert after is not None and after.phase is phase


def test_postcopy_after_the_switch_over_wins() -> None:
    """Post-copy sends SUSPENDED/MIGRATED then SUSPENDED/POSTCOPY within 13 ms: POSTCOPY."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(2))
    watcher.on_lifecycle(*SUSPENDED_MIGRATED)
    update = watcher.on_lifecycle(*SUSPENDED_POSTCOPY)
    assert update is not None and update.phase is Phase.POSTCOPY


@pytest.mark.parametrize("event", [RESUMED_UNPAUSED, STARTED_BOOTED, STOPPED_MIGRATED])
def test_other_lifecycle_events_publish_nothing(event: tuple[int, int]) -> None:
    """Events that do not change an outgoing job's phase publish nothing."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(2))
    assert watcher.on_lifecycle(*event) is None
    assert watcher.phase is Phase.PRECOPY


@pytest.mark.parametrize(("by_postcopy", "phase"), [(True, Phase.POSTCOPY), (False, Phase.PAUSED)])
def test_force_complete_sets_the_phase(by_postcopy: bool, phase: Phase) -> None:
    """force-complete by post-copy allows post-copy in the limits; by pausing it does not."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(5))
    update = watcher.on_forced(by_postcopy)
    assert update is not None and update.phase is phase
    assert update.limits.postcopy_allowed is by_postcopy


def test_set_limits_change_only_what_was_given() -> None:
    """A new max downtime leaves the bandwidth as it was, and the other way round."""
    watcher = JobWatcher(INFO, limits=Limits(max_downtime_s=0.3, max_bandwidth_bps=50 * MIB))
    first = watcher.on_limits_set(3.0, None)
    assert first is not None and first.limits == Limits(3.0, 50 * MIB)
    second = watcher.on_limits_set(None, 80 * MIB)
    assert second is not None and second.limits == Limits(3.0, 80 * MIB)


def test_limits_are_reread_at_each_new_pass_only() -> None:
    """The first sample and each new iteration ask for the limits; samples within a pass and
    a new sampling task's first sample after ``watching`` behave accordingly."""
    watcher = JobWatcher(INFO)
    asks = [watcher.on_stats(stats(i)).reread_limits for i in (0, 0, 1, 1, 1, 2)]
    assert asks == [True, False, True, False, False, True]
    watcher.watching(Limits())  # libvirt reconnected: a new task
    assert watcher.on_stats(stats(2)).reread_limits


# -- endings ---------------------------------------------------------------------------------


def test_job_completed_ends_the_job_with_its_final_stats() -> None:
    """JOB_COMPLETED: COMPLETED with the actual downtime and the final counters, once."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(6))
    final = watcher.on_job_completed(completed_params(downtime_ms=34))
    assert isinstance(final, Final) and final.outcome == "completed"
    assert final.update.phase is Phase.COMPLETED
    assert final.update.actual_downtime_s == pytest.approx(0.034)
    assert final.update.sample is not None and final.update.sample.elapsed_s == 20.985
    assert final.completed is not None and final.completed["memory_constant"] == 60000
    assert watcher.done
    assert watcher.on_job_completed(completed_params()) is None  # never twice
    assert watcher.on_lifecycle(*STOPPED_MIGRATED) is None
    assert running(watcher, stats(7)) is None


def test_job_completed_of_another_job_is_ignored() -> None:
    """A JOB_COMPLETED for an incoming migration (operation 4) does not end an outgoing one."""
    watcher = JobWatcher(INFO)
    assert watcher.on_job_completed({**completed_params(), "operation": 4}) is None
    assert not watcher.done


@pytest.mark.parametrize(
    ("completed", "state", "stopped", "cancelled", "phase", "error"),
    [
        ({"type": 3, "downtime": 28}, SHUTOFF_MIGRATED, "", False, Phase.COMPLETED, ""),
        ({"type": 4, "errmsg": "disk full"}, RUNNING, "", False, Phase.FAILED, "disk full"),
        ({"type": 4}, RUNNING, "", False, Phase.FAILED, "migration failed"),
        ({"type": 0}, DomainState(5, 1), "DESTROYED", False, Phase.FAILED,
         "the guest stopped on the source (destroyed) before the migration completed"),
        ({"type": 0}, RUNNING, "", True, Phase.CANCELLED, ""),  # abortJob(): no event at all
        ({"type": 5}, RUNNING, "", False, Phase.CANCELLED, ""),
        ({}, None, "", False, Phase.COMPLETED, ""),  # a transient guest vanishes on success
        ({"type": 0}, SHUTOFF_MIGRATED, "", False, Phase.COMPLETED, ""),  # persistent guest
        ({"type": 0}, RUNNING, "", False, Phase.CANCELLED, ""),  # running, nothing kept
    ],
)  # fmt: skip
def test_classify_end(
    completed: dict[str, Any],
    state: DomainState | None,
    stopped: str,
    cancelled: bool,
    phase: Phase,
    error: str,
) -> None:
    """Every way a job that left jobStats() is classified, in libvirt's order of evidence."""
    assert classify_end(completed, state, stopped=stopped, cancelled=cancelled) == (phase, error)


def test_abort_settles_cancelled_without_waiting() -> None:
    """After abortJob() the stats turn CANCELLED once, then NONE: no JOB_COMPLETED will come,
    so there is no wait, and the running guest means CANCELLED."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(3))
    watcher.on_abort_requested()
    step = watcher.on_stats({"type": 5, "operation": 5, "time_elapsed": 0})
    assert step.over and watcher.saw_cancelled
    assert watcher.settle_wait_s() == 0.0
    final = watcher.settle({"type": 0}, RUNNING, now=1030.0)
    assert final is not None and final.update.phase is Phase.CANCELLED
    assert final.outcome == "aborted" and final.completed is None


@pytest.mark.parametrize(
    ("events", "abort", "wait"),
    [
        ([], False, GRACE_WAIT_S),
        ([SUSPENDED_MIGRATED], False, FINAL_EVENT_WAIT_S),
        ([STOPPED_MIGRATED], False, FINAL_EVENT_WAIT_S),
        ([], True, GRACE_WAIT_S),  # requested, but the CANCELLED type was not seen
    ],
)
def test_how_long_to_wait_for_job_completed(
    events: list[tuple[int, int]], abort: bool, wait: float
) -> None:
    """After a switch-over JOB_COMPLETED is due within ~2 s; otherwise a short grace."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(3))
    for event in events:
        watcher.on_lifecycle(*event)
    if abort:
        watcher.on_abort_requested()
    assert watcher.on_stats({"type": 0}).over
    assert watcher.settle_wait_s() == wait


def test_switched_over_job_whose_event_never_came_completes_with_its_last_sample() -> None:
    """A switched-over transient guest that vanished without JOB_COMPLETED completed; its last
    sample stands (the switch-over was seen, the counters are not stale)."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(5, elapsed_ms=20000))
    watcher.on_lifecycle(*SUSPENDED_MIGRATED)
    final = watcher.settle({}, None, now=9999.0)
    assert final is not None and final.update.phase is Phase.COMPLETED
    assert final.update.sample is not None and final.update.sample.elapsed_s == 20.0
    assert final.update.actual_downtime_s is None


def test_job_that_ended_unseen_takes_the_wall_clock_duration() -> None:
    """A job that completed while libvirt was unreachable: the stale sample's remaining bytes
    are zeroed and its duration is the wall clock's."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(2, elapsed_ms=8000))
    final = watcher.settle({}, None, now=INFO.started_at + 42.0)
    assert final is not None and final.update.phase is Phase.COMPLETED
    sample = final.update.sample
    assert sample is not None and sample.elapsed_s == 42.0
    assert sample.memory_remaining == 0 and sample.disk_remaining == 0


def test_persistent_guest_completion_uses_the_kept_stats() -> None:
    """A persistent guest keeps jobStats(COMPLETED): its downtime and counters are the final."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(5))
    final = watcher.settle({**completed_params(31), "type": 3}, SHUTOFF_MIGRATED, now=2000.0)
    assert final is not None and final.update.actual_downtime_s == pytest.approx(0.031)
    assert final.completed is not None


def test_destroyed_guest_fails_the_migration() -> None:
    """STOPPED/DESTROYED on the source during the job is a failure, with what stopped it."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(2))
    assert watcher.on_lifecycle(*STOPPED_DESTROYED) is None
    final = watcher.settle({"type": 0}, DomainState(5, 1), now=1010.0)
    assert final is not None and final.update.phase is Phase.FAILED
    assert "destroyed" in final.update.error_message and final.outcome == "failed"


def test_job_completed_during_the_wait_wins_over_settling() -> None:
    """If JOB_COMPLETED came while the backend waited, settling reports it and nothing else."""
    watcher = JobWatcher(INFO)
    running(watcher, stats(5))
    watcher.on_lifecycle(*SUSPENDED_MIGRATED)
    assert watcher.on_stats({"type": 0}).over
    assert watcher.on_job_completed(completed_params()) is not None
    assert watcher.settle({}, None, now=1.0) is None  # already final


# -- the agent started mid-job, and restart settlement --------------------------------------------


def test_agent_started_mid_job_derives_the_same_start() -> None:
    """Two agents that find the same job at different times derive the same start time (the id),
    and the first sample either sees asks for the limits and shows the job's phase at once."""
    first = job_started_at(stats(1, elapsed_ms=1500), now=1001.5)
    later = job_started_at(stats(4, elapsed_ms=31500), now=1031.5)
    assert first == later == 1000.0
    watcher = JobWatcher(INFO)
    step = watcher.on_stats(stats(4, elapsed_ms=31500))
    assert step.reread_limits
    update = watcher.on_running(step)
    assert update is not None and update.phase is Phase.PRECOPY


@pytest.mark.parametrize(
    ("completed", "state", "ending"),
    [
        ({"type": 3, "downtime": 28}, SHUTOFF_MIGRATED, Ending(Phase.COMPLETED, "", 0.028)),
        ({}, None, Ending(Phase.COMPLETED)),
        ({"type": 0}, RUNNING, Ending(Phase.CANCELLED)),
        ({"type": 4, "errmsg": "x"}, RUNNING, Ending(Phase.FAILED, "x")),
    ],
)
def test_restart_settles_outgoing_jobs_that_ended_unwatched(
    completed: dict[str, Any], state: DomainState | None, ending: Ending
) -> None:
    """A job in flight when the previous agent stopped: its ending from what libvirt kept."""
    assert ending_of(completed, state) == ending


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        (None, Phase.FAILED),  # gone
        (DomainState(5, 5), Phase.FAILED),  # shut off
        (DomainState(1, 10), Phase.POSTCOPY),  # RUNNING/POSTCOPY
        (DomainState(1, 2), Phase.COMPLETED),  # RUNNING/MIGRATED
        (DomainState(3, 2), None),  # PAUSED/MIGRATION: still copying
        (DomainState(3, 11), None),  # PAUSED/STARTING_UP
    ],
)
def test_incoming_phase_from_the_domain_state(
    state: DomainState | None, phase: Phase | None
) -> None:
    """The destination's state (NOTES.md: (3,11) -> (3,2) -> (1,10) -> (1,2)) is its phase."""
    assert incoming_phase(state) is phase


@pytest.mark.parametrize(
    ("event", "phase"),
    [(RESUMED_POSTCOPY, Phase.POSTCOPY), (RESUMED_MIGRATED, Phase.COMPLETED),
     (STOPPED_FAILED, Phase.FAILED), (RESUMED_UNPAUSED, None), (STARTED_MIGRATED, None)],
)  # fmt: skip
def test_incoming_events(event: tuple[int, int], phase: Phase | None) -> None:
    """B's RESUMED/POSTCOPY, RESUMED/MIGRATED and STOPPED move an incoming job; others not."""
    assert incoming_event(*event) is phase


def test_incoming_start_and_outgoing_jobs_are_recognised() -> None:
    """STARTED/MIGRATED announces an incoming job; only running MIGRATION_OUT jobs are outgoing."""
    assert is_incoming_start(*STARTED_MIGRATED) and not is_incoming_start(*STARTED_BOOTED)
    assert is_outgoing_migration(stats(1))
    assert not is_outgoing_migration({"type": 0})
    assert not is_outgoing_migration({**stats(1), "operation": 4})
    assert not is_outgoing_migration({**stats(1), "type": 5})


# -- the lab's recordings ----------------------------------------------------------------------


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_event_names_match_the_recordings() -> None:
    """Every lifecycle event in the recordings (named by the lab from libvirt's own constants)
    gets the same name from the watcher's copies of libvirt's numbers, or stays a number."""
    named: set[str] = set()
    for path in sorted(TRACES.rglob("*.jsonl")):
        for line in lines(path):
            if line.get("event") == "LIFECYCLE":
                event, detail = line["raw"]
                assert lifecycle_name(event) == line["lifecycle"], path.name
                name = detail_name(event, detail)
                # The watcher names only the details it tells apart; the rest stay numbers.
                assert name in (line["detail"], str(detail)), path.name
                if name == line["detail"]:
                    named.add(f"{line['lifecycle']}/{name}")
    assert {"SUSPENDED/MIGRATED", "SUSPENDED/POSTCOPY", "RESUMED/MIGRATED", "RESUMED/POSTCOPY",
            "RESUMED/UNPAUSED", "STOPPED/MIGRATED", "STOPPED/FAILED"} <= named  # fmt: skip


def replay(path: Path) -> tuple[list[Phase], Final]:
    """Feed a recording's source side to a watcher the way the backend would; returns the
    phases published and the final."""
    watcher = JobWatcher(INFO)
    phases: list[Phase] = []
    found = over = False
    final: Final | None = None
    result: dict[str, Any] = {}
    for line in lines(path):
        if line["type"] == "result":
            result = line
        if line.get("host") != "A" or final is not None:
            continue
        if line["type"] == "stats" and not over:
            if "error" in line:  # the backend's jobStats() raised: the job is over
                over = found
                continue
            if not found and not is_outgoing_migration(line["stats"]):
                continue  # before the job: nothing to find yet
            found = True
            step = watcher.on_stats(line["stats"])
            over = step.over
            update = watcher.on_running(step)
            if update is not None:
                phases.append(update.phase)
        elif line["type"] == "event" and found and line["event"] == "LIFECYCLE":
            update = watcher.on_lifecycle(*line["raw"])
            if update is not None:
                phases.append(update.phase)
        elif line["type"] == "event" and found and line["event"] == "JOB_COMPLETED":
            final = watcher.on_job_completed(line["params"])
    if final is None:
        kept = result.get("src_completed", {})
        gone = "error" in kept
        # After an abort the guest keeps running on the source (NOTES.md).
        final = watcher.settle({} if gone else kept, None if gone else RUNNING, now=0.0)
    assert final is not None
    return phases, final


RECORDINGS = sorted(TRACES.rglob("*.jsonl"))  # ours and the first ten (shared/)


@pytest.mark.parametrize("path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
def test_recorded_migrations_end_as_recorded(path: Path) -> None:
    """Each recorded migration, fed to the watcher, ends as the recording says (completed with
    the actual downtime of JOB_COMPLETED, or aborted), through phases in a legal order."""
    phases, final = replay(path)
    result = next(line for line in lines(path) if line["type"] == "result")
    assert final.outcome == result["outcome"]
    if result["outcome"] == "completed":
        params = result["job_completed_event"]["A"]
        assert final.update.actual_downtime_s == pytest.approx(params["downtime"] / 1000)
    order = [Phase.SETUP, Phase.DISK_MIRROR, Phase.PRECOPY]
    early = [order.index(p) for p in phases if p in order]
    assert early == sorted(early), phases  # never back to setup or the disk copy
    raw = [tuple(line["raw"]) for line in lines(path)
           if line.get("host") == "A" and line.get("event") == "LIFECYCLE"]  # fmt: skip
    assert (Phase.POSTCOPY in phases) is (SUSPENDED_POSTCOPY in raw)
    disk = any(line.get("stats", {}).get("disk_total") for line in lines(path)
               if line.get("host") == "A")  # fmt: skip
    assert (Phase.DISK_MIRROR in phases) is bool(disk)
