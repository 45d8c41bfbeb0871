"""libvirt job statistics -> ``JobSample``: the one place that knows libvirt's key names.

Two kinds of dict come in, both from ``virDomainGetJobStats`` semantics:

* running stats (``dom.jobStats()``): ``type`` is the job type, ``downtime`` is QEMU's
  *expected* downtime in ms;
* completed stats (``jobStats(VIR_DOMAIN_JOB_STATS_COMPLETED)``, ``type`` 3, or the
  ``JOB_COMPLETED`` event params, which have no ``type`` at all): ``downtime`` is the
  *actual* downtime, ``time_elapsed`` the true duration of the job (until switch-over).

Every field is defaulted: libvirt omits keys it has no value for (``memory_bps`` and
``downtime`` in the first quarter second, ``auto_converge_throttle`` unless the job uses
auto-converge). Nothing here does I/O or imports libvirt; the constants mirror
``VIR_DOMAIN_JOB_*`` so this module works on recorded traces too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from migwatch.agent.model import JobSample


class JobType(enum.IntEnum):
    """``virDomainJobType``."""

    NONE = 0  # no job
    BOUNDED = 1  # job with a known end (time_remaining present)
    UNBOUNDED = 2  # job without a known end: every migration we have seen
    COMPLETED = 3  # stats of the last completed job
    FAILED = 4  # the job failed
    CANCELLED = 5  # the job was aborted (abortJob)


#: Job types whose stats describe a migration still in progress.
RUNNING_TYPES = frozenset({JobType.BOUNDED, JobType.UNBOUNDED})
#: Job types that mean there is no job in progress (any other type counts as running).
ENDED_TYPES = frozenset({JobType.NONE, JobType.COMPLETED, JobType.FAILED, JobType.CANCELLED})


@dataclass(frozen=True, slots=True)
class CompletedJob:
    """The final figures of a finished migration job (source or destination side)."""

    elapsed_s: float  # true duration: job start -> switch-over done (``time_elapsed``)
    downtime_s: float | None  # actual downtime of the guest (``downtime``)
    downtime_net_s: float | None  # downtime without the source/destination clock skew
    data_processed: int  # bytes sent, re-sends included
    data_total: int
    memory_processed: int
    memory_total: int
    disk_total: int
    iterations: int  # memory passes, including the final stop-and-copy one
    postcopy_requests: int


def _int(stats: Mapping[str, object], key: str, default: int = 0) -> int:
    """An integer counter from the dict; absent, None or non-numeric -> ``default``."""
    value = stats.get(key)
    if isinstance(value, bool):  # bool is an int subclass: never a counter
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return default


def _opt_int(stats: Mapping[str, object], key: str) -> int | None:
    """An optional integer: ``None`` when libvirt did not report the key."""
    if key not in stats:
        return None
    value = stats[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def job_type(stats: Mapping[str, object]) -> JobType | None:
    """The job type of a stats dict; ``None`` for JOB_COMPLETED event params (no ``type``)."""
    raw = _opt_int(stats, "type")
    if raw is None:
        return None
    try:
        return JobType(raw)
    except ValueError:
        return None


def job_type_name(value: int) -> str:
    """The name traces record for a job type number (``"UNBOUNDED"``), or the number."""
    try:
        return JobType(value).name
    except ValueError:
        return str(value)


def job_over(stats: Mapping[str, object]) -> bool:
    """Whether a ``jobStats()`` dict shows no job in progress: no ``type``, or one of
    ``ENDED_TYPES``. A type this module does not know counts as a running job."""
    return "type" not in stats or job_type(stats) in ENDED_TYPES


def no_job(stats: Mapping[str, object]) -> bool:
    """Whether a ``jobStats()`` dict says the domain has no job at all (type NONE)."""
    return "type" not in stats or job_type(stats) is JobType.NONE


def actual_downtime_s(stats: Mapping[str, object]) -> float | None:
    """The guest's actual downtime in seconds from completed stats or JOB_COMPLETED params
    (``downtime``, ms); ``None`` when absent. In running stats the same key is QEMU's
    *expected* downtime (``JobSample.expected_downtime_ms``)."""
    value = stats.get("downtime")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) / 1000.0


def is_running(stats: Mapping[str, object]) -> bool:
    """Whether the dict describes a job in progress (BOUNDED or UNBOUNDED)."""
    return job_type(stats) in RUNNING_TYPES


def parse_job_stats(stats: Mapping[str, object]) -> JobSample | None:
    """Normalise one libvirt job-stats dict into a ``JobSample``.

    Returns ``None`` when there is no job (``type`` NONE, or an empty dict). Works on
    running stats, completed stats and JOB_COMPLETED event params alike; only for running
    jobs is ``downtime`` QEMU's expected downtime (``expected_downtime_ms``) — in completed
    stats it is the actual downtime, see ``completed_job``.
    """
    if not stats:
        return None
    kind = job_type(stats)
    if kind is JobType.NONE:
        return None
    page_size = _int(stats, "memory_page_size", 4096) or 4096
    return JobSample(
        elapsed_s=_int(stats, "time_elapsed") / 1000.0,
        memory_total=_int(stats, "memory_total"),
        memory_processed=_int(stats, "memory_processed"),
        memory_remaining=_int(stats, "memory_remaining"),
        memory_bps=_int(stats, "memory_bps"),
        dirty_pages_per_s=_int(stats, "memory_dirty_rate"),
        page_size=page_size,
        iteration=_int(stats, "memory_iteration"),
        disk_total=_int(stats, "disk_total"),
        disk_processed=_int(stats, "disk_processed"),
        disk_remaining=_int(stats, "disk_remaining"),
        expected_downtime_ms=_opt_int(stats, "downtime") if kind in RUNNING_TYPES else None,
        postcopy_requests=_int(stats, "memory_postcopy_requests"),
        auto_converge_throttle=_opt_int(stats, "auto_converge_throttle"),
    )


def completed_job(stats: Mapping[str, object]) -> CompletedJob | None:
    """The final figures from completed stats or JOB_COMPLETED event params.

    Returns ``None`` for anything that is not a completed job: ``{"type": 0}`` (what
    ``jobStats(COMPLETED)`` gives after an abort or after post-copy on the destination),
    running stats, or a dict without ``time_elapsed``.
    """
    kind = job_type(stats)
    if kind is not None and kind is not JobType.COMPLETED:
        return None
    if "time_elapsed" not in stats:
        return None
    downtime_net = _opt_int(stats, "downtime_net")
    return CompletedJob(
        elapsed_s=_int(stats, "time_elapsed") / 1000.0,
        downtime_s=actual_downtime_s(stats),
        downtime_net_s=None if downtime_net is None else downtime_net / 1000.0,
        data_processed=_int(stats, "data_processed"),
        data_total=_int(stats, "data_total"),
        memory_processed=_int(stats, "memory_processed"),
        memory_total=_int(stats, "memory_total"),
        disk_total=_int(stats, "disk_total"),
        iterations=_int(stats, "memory_iteration"),
        postcopy_requests=_int(stats, "memory_postcopy_requests"),
    )
