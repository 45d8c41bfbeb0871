"""Tests for the libvirt job-stats translation (agent/backends/jobstats.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migwatch.agent.backends.jobstats import (
    JobType,
    completed_job,
    is_running,
    job_type,
    parse_job_stats,
)

# A real running sample (converge trace, iteration 2) and the JOB_COMPLETED params.
RUNNING = {
    "operation": 5,
    "time_elapsed": 14915,
    "downtime": 4877,
    "setup_time": 1,
    "data_total": 1074274304,
    "data_processed": 925444838,
    "data_remaining": 249933824,
    "memory_total": 1074274304,
    "memory_processed": 925444838,
    "memory_remaining": 249933824,
    "memory_bps": 62955540,
    "memory_constant": 46648,
    "memory_normal": 225390,
    "memory_normal_bytes": 923197440,
    "memory_dirty_rate": 5121,
    "memory_iteration": 2,
    "memory_postcopy_requests": 0,
    "memory_page_size": 4096,
    "disk_total": 0,
    "disk_processed": 0,
    "disk_remaining": 0,
    "type": 2,
}
EVENT_PARAMS = {
    "operation": 5,
    "time_elapsed": 20968,
    "time_elapsed_net": 20967,
    "downtime": 16,
    "downtime_net": 15,
    "setup_time": 1,
    "data_total": 1074274304,
    "data_processed": 1321281676,
    "data_remaining": 0,
    "memory_total": 1074274304,
    "memory_processed": 1321281676,
    "memory_remaining": 0,
    "memory_bps": 63783240,
    "memory_dirty_rate": 0,
    "memory_iteration": 7,
    "memory_postcopy_requests": 0,
    "memory_page_size": 4096,
    "disk_total": 0,
    "disk_processed": 0,
    "disk_remaining": 0,
}


@pytest.mark.parametrize("stats", [{}, {"type": 0}])
def test_no_job_is_none(stats: dict[str, object]) -> None:
    """An empty dict or job type NONE means there is no job to describe."""
    assert parse_job_stats(stats) is None


def test_running_sample_fields() -> None:
    """A running dict maps every key, time_elapsed ms -> s and downtime -> expected."""
    s = parse_job_stats(RUNNING)
    assert s is not None
    assert s.elapsed_s == pytest.approx(14.915)
    assert s.memory_total == 1074274304
    assert s.memory_processed == 925444838
    assert s.memory_remaining == 249933824
    assert s.memory_bps == 62955540
    assert s.dirty_pages_per_s == 5121
    assert s.dirty_bytes_per_s == 5121 * 4096
    assert s.iteration == 2
    assert s.expected_downtime_ms == 4877
    assert s.auto_converge_throttle is None


def test_first_sample_without_optional_keys() -> None:
    """The first quarter second lacks memory_bps and downtime: they default, not fail."""
    s = parse_job_stats({"type": 2, "operation": 5, "time_elapsed": 250, "memory_iteration": 0})
    assert s is not None
    assert (s.memory_bps, s.expected_downtime_ms, s.iteration, s.page_size) == (0, None, 0, 4096)


def test_event_params_without_type_parse() -> None:
    """JOB_COMPLETED params (no `type`) still parse; their downtime is not an expectation."""
    s = parse_job_stats(EVENT_PARAMS)
    assert s is not None
    assert s.elapsed_s == pytest.approx(20.968)
    assert s.expected_downtime_ms is None


def test_completed_job_from_event_params() -> None:
    """The completed figures carry the true duration and the actual downtime."""
    done = completed_job(EVENT_PARAMS)
    assert done is not None
    assert done.elapsed_s == pytest.approx(20.968)
    assert done.downtime_s == pytest.approx(0.016)
    assert done.downtime_net_s == pytest.approx(0.015)
    assert done.iterations == 7
    assert done.data_processed == 1321281676


@pytest.mark.parametrize("stats", [{"type": 0}, RUNNING, {"type": 3}])
def test_completed_job_rejects_non_completed(stats: dict[str, object]) -> None:
    """No job, a running job, or completed stats without time_elapsed give None."""
    assert completed_job(stats) is None


def test_job_type_and_running() -> None:
    """Job types map to the enum; only BOUNDED and UNBOUNDED count as running."""
    assert job_type({"type": 5}) is JobType.CANCELLED
    assert job_type({}) is None
    assert job_type({"type": 99}) is None
    assert is_running(RUNNING)
    assert not is_running({"type": 3})


def test_garbage_values_default() -> None:
    """Booleans, strings and None where counters belong fall back to the defaults."""
    s = parse_job_stats(
        {
            "type": 2,
            "time_elapsed": "x",
            "memory_total": True,
            "memory_page_size": 0,
            "downtime": None,
        }
    )
    assert s is not None
    assert (s.elapsed_s, s.memory_total, s.page_size, s.expected_downtime_ms) == (0, 0, 4096, None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(sorted(RUNNING) + ["auto_converge_throttle"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**40), 2**62),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=3),
        ),
        max_size=8,
    )
)
def test_parse_never_raises(stats: dict[str, object]) -> None:
    """Any mix of known keys and odd values parses to a sample or None, never an error."""
    s = parse_job_stats(stats)
    if s is not None:
        assert isinstance(s.elapsed_s, float)
