"""What a host learns from its completed migrations (resident-memory overhead, teardown after
the job), and its use."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from migwatch.agent.backends.protocol import Observation
from migwatch.agent.core.tracker import Tracker
from migwatch.agent.estimate.etaconfig import EstimatorConfig, with_overhead
from migwatch.agent.estimate.overhead import ResidentOverhead, TeardownTime
from migwatch.agent.model import MIB, JobSample, Phase

from tests.test_tracker import info

TRACES = Path(__file__).resolve().parent.parent / "bench" / "traces"


def _completed_with_rss(path: Path) -> tuple[int, dict[str, int]] | None:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    memstats = next((ln for ln in lines if ln["type"] == "memstats" and "stats" in ln), None)
    result = next((ln for ln in lines if ln["type"] == "result"), None)
    if memstats is None or result is None or result["outcome"] != "completed":
        return None
    params = (result.get("job_completed_event") or {}).get("A")
    return (memstats["stats"]["rss"] * 1024, params) if params else None


def test_learns_the_overhead_of_this_host_from_real_migrations() -> None:
    """Every recorded lab migration with resident memory, fed in as the agent would at
    JOB_COMPLETED: the learned value lands where the lab measured it apart (174-177 MiB on
    idle guests, TCG), whatever the guest's size or fill."""
    learner = ResidentOverhead()
    readings = []
    for path in sorted(TRACES.glob("mw[234]-*.jsonl")):
        found = _completed_with_rss(path)
        if found is None:
            continue
        rss, params = found
        reading = learner.learn(
            resident_bytes=rss,
            memory_total=params["memory_total"],
            zero_pages=params["memory_constant"],
            page_size=params["memory_page_size"],
        )
        assert reading is not None, path.name
        readings.append(reading)
    assert len(readings) >= 10
    value = learner.value()
    assert value is not None and 165 * MIB <= value <= 185 * MIB
    assert learner.readings == learner.window  # only the latest are kept


def test_no_reading_from_impossible_counters() -> None:
    learner = ResidentOverhead()
    assert learner.value() is None  # nothing learned yet: the configured value stands
    assert (
        learner.learn(resident_bytes=None, memory_total=1024 * MIB, zero_pages=0, page_size=4096)
        is None
    )
    # More non-zero RAM than was resident: the guest wrote new memory while migrating.
    assert (
        learner.learn(
            resident_bytes=300 * MIB,
            memory_total=1024 * MIB,
            zero_pages=(100 * MIB) // 4096,
            page_size=4096,
        )
        is None
    )
    assert (
        learner.learn(resident_bytes=500 * MIB, memory_total=0, zero_pages=0, page_size=4096)
        is None
    )
    assert learner.value() is None


def test_one_odd_migration_does_not_move_the_median() -> None:
    learner = ResidentOverhead()
    for _ in range(4):
        learner.learn(
            resident_bytes=700 * MIB,
            memory_total=1024 * MIB,
            zero_pages=(500 * MIB) // 4096,
            page_size=4096,
        )  # 176 MiB
    learner.learn(
        resident_bytes=700 * MIB,
        memory_total=1024 * MIB,
        zero_pages=(340 * MIB) // 4096,
        page_size=4096,
    )  # 16 MiB: wrote while moving
    assert learner.value() == 176 * MIB


def test_with_overhead_replaces_only_when_learned() -> None:
    cfg = EstimatorConfig()
    assert with_overhead(cfg, None) is cfg
    assert with_overhead(cfg, 20 * MIB).resident_overhead_bytes == 20 * MIB
    assert with_overhead(cfg, 20 * MIB).budget_s == cfg.budget_s


def test_teardown_is_the_median_of_job_end_to_source_stop() -> None:
    """Each completed job's end to its source's stop is one reading (a stop seen a rounding
    early counts as 0); the median of the last few is the host's teardown."""
    learner = TeardownTime(window=3)
    assert learner.value() is None
    assert learner.learn(job_end_at=100.0, stopped_at=101.8) == pytest.approx(1.8)
    assert learner.learn(job_end_at=200.0, stopped_at=199.9) == 0.0
    assert learner.learn(job_end_at=300.0, stopped_at=302.2) == pytest.approx(2.2)
    assert learner.value() == pytest.approx(1.8)
    assert learner.learn(job_end_at=400.0, stopped_at=409.0) == pytest.approx(9.0)
    assert learner.value() == pytest.approx(2.2)  # window 3: 0.0, 2.2, 9.0
    assert learner.readings == 3


def test_teardown_ignores_stops_that_are_not_the_migrations() -> None:
    """A stop long before the job's end, or minutes after it, says nothing of the teardown."""
    learner = TeardownTime()
    assert learner.learn(job_end_at=100.0, stopped_at=90.0) is None
    assert learner.learn(job_end_at=100.0, stopped_at=400.0) is None
    assert learner.value() is None


def test_with_overhead_takes_the_learned_teardown() -> None:
    """A learned teardown replaces the configured one; none learned keeps the config as is."""
    cfg = EstimatorConfig()
    assert with_overhead(cfg, None, None) is cfg
    assert with_overhead(cfg, None, 3.5).migration_overhead_s == 3.5
    assert with_overhead(cfg, 20 * MIB, 3.5).resident_overhead_bytes == 20 * MIB


@pytest.mark.parametrize("overhead_mib", [0, 400])
def test_the_tracker_estimates_with_the_learned_overhead(overhead_mib: int) -> None:
    """Pass 1 of a 1 GiB guest with 600 MiB resident: with no overhead 600 MiB are non-zero,
    with 400 MiB of it QEMU's only 200 MiB are, and pass 1 ends far sooner."""
    mi = replace(info(), resident_bytes=600 * MIB, resident_overhead_bytes=overhead_mib * MIB)
    tracker = Tracker(lambda: "h1", "test")
    etas = []
    for t, sent in ((0.5, 50 * MIB), (1.0, 100 * MIB), (1.5, 150 * MIB)):
        s = JobSample(
            elapsed_s=t,
            memory_total=1024 * MIB,
            memory_processed=sent,
            memory_remaining=1024 * MIB - sent,
            memory_bps=100 * MIB,
            iteration=1,
        )
        m = tracker.observe(
            Observation(info=mi, now=mi.started_at + t, phase=Phase.PRECOPY, sample=s)
        )
        assert m is not None
        etas.append(m.eta_s)
    eta = etas[-1]
    assert eta is not None
    # Non-zero left to send at 100 MiB/s: 600 - 150 = 450 MiB (4.5 s) or 200 - 150 = 50 MiB.
    if overhead_mib == 0:
        assert eta > 4.0
    else:
        assert eta < 2.0


def test_a_loose_resident_reading_is_not_learned_as_overhead() -> None:
    """The issue's 2 GiB guest: rss 1.9 GiB, 815 MiB sent as zero pages. rss - non-zero is
    ~740 MiB, the huge-page slack of a model that took rss for non-zero bytes, not QEMU's
    memory: it is rejected and counted, and the learned value stays the lab's."""
    learner = ResidentOverhead()
    assert learner.learn(
        resident_bytes=176 * MIB + 700 * MIB,
        memory_total=1024 * MIB,
        zero_pages=(324 * MIB) // 4096,
        page_size=4096,
    ) == pytest.approx(176 * MIB)
    loose = learner.learn(
        resident_bytes=1946 * MIB,
        memory_total=2048 * MIB,
        zero_pages=(815 * MIB) // 4096,
        page_size=4096,
    )
    assert loose is None
    assert learner.loose_readings == 1
    assert learner.value() == 176 * MIB


# -- kept across restarts (--state-dir): agent/backends/learned.py -------------------------


def test_learners_give_back_their_readings_and_take_them_again() -> None:
    """``history`` is what a restarted agent restores; ``restore`` rebuilds the same median and
    drops readings no migration could have produced."""
    over, tear = ResidentOverhead(), TeardownTime()
    for rss in (400, 410, 405):
        over.learn(resident_bytes=rss * MIB, memory_total=512 * MIB, zero_pages=(512 - 230) * 256,
                   page_size=4096)  # fmt: skip
    tear.learn(job_end_at=10.0, stopped_at=11.5)
    tear.learn(job_end_at=20.0, stopped_at=21.9)
    again_o, again_t = ResidentOverhead(), TeardownTime()
    again_o.restore([*over.history, -5.0, 10.0 * 2**30])  # two impossible readings
    again_t.restore([*tear.history, 500.0])
    assert again_o.history == over.history and again_o.value() == over.value()
    assert again_t.history == tear.history and again_t.value() == pytest.approx(1.7)


def test_learned_file_round_trip_and_a_bad_file_is_only_a_lost_head_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What is saved loads back; no file is an empty start; a corrupt or foreign file is
    logged and ignored; the write is whole (no temporary file left behind)."""
    from migwatch.agent.backends.learned import Learned, LearnedFile

    f = LearnedFile(tmp_path / "state")
    assert f.load() == Learned()
    f.save(Learned((170.0 * MIB, 180.0 * MIB), (1.5,)))
    assert f.load() == Learned((170.0 * MIB, 180.0 * MIB), (1.5,))
    assert [p.name for p in f.path.parent.iterdir()] == ["learned.json"]
    f.path.write_text("{not json")
    assert f.load() == Learned() and "ignoring" in caplog.text
    f.path.write_text(json.dumps({"version": 99, "teardown_s": [1.0]}))
    assert f.load() == Learned()


def test_libvirt_backend_keeps_what_it_learned_across_a_restart(tmp_path: Path) -> None:
    """A libvirt backend with a state directory saves each new reading and a new one on the
    same directory starts from them (the describe() facts then carry the learned values)."""
    import os

    if os.environ.get("MIGWATCH_SKIP_LAB") == "1":
        pytest.skip("MIGWATCH_SKIP_LAB=1: libvirt-python may be absent")
    from migwatch.agent.backends.libvirt.backend import LibvirtBackend

    uri = "qemu+tcp://127.0.0.1:1/system"  # never connected: only the constructor runs
    first = LibvirtBackend(uri, state_dir=str(tmp_path))
    completed = {"memory_total": 512 * MIB, "memory_constant": (512 - 228) * 256,
                 "memory_page_size": 4096}  # fmt: skip
    first._learning.completed_job("vm", 400 * MIB, completed)
    first._learning.stopped_after_job("vm", job_end_at=5.0, stopped_at=6.8)
    second = LibvirtBackend(uri, state_dir=str(tmp_path))
    assert second._learning.overhead.value() == first._learning.overhead.value() == 172 * MIB
    assert second._learning.teardown.value() == pytest.approx(1.8)
    assert LibvirtBackend(uri)._learning.teardown.value() is None  # no state dir: nothing kept
