"""What the live estimator remembers of one migration's samples. Pure: no I/O, no clock.

``MigrationEstimator`` (``estimator``) feeds each sample to these two trackers before it
assembles the estimate (``livephase``). They are the only state that follows the job from
sample to sample, so they sit apart from the estimate's arithmetic, each with one question:

* ``TransferRate``: how fast the migration sends now (an EWMA of QEMU's own rate, started
  afresh when the phase or the bandwidth limit changes) and how much that rate wobbles;
* ``PassLog``: where the memory passes began and ended (the remaining at each pass
  boundary, the dirty rate each finished pass measured) and auto-converge's throttle along
  them, as the pass model follows it.

Time comes only from ``JobSample.elapsed_s``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from migwatch.agent.estimate.dirtyfit import PassObservation
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.passmodel import AutoConverge
from migwatch.agent.model import JobSample, Limits, Phase

__all__ = ["PassLog", "TransferRate"]


class TransferRate:
    """The migration's transfer rate, followed within the current phase."""

    def __init__(self, config: EstimatorConfig) -> None:
        self._cfg = config
        self._rate: float | None = None  # EWMA transfer rate, current phase
        self._rates: list[float] = []  # recent instantaneous rates
        self._phase: Phase | None = None
        self._limit: int | None = None
        self._disk_origin: tuple[float, int] | None = None  # (elapsed, disk_processed)

    def update(
        self,
        phase: Phase,
        prev: JobSample | None,
        sample: JobSample,
        limits: Limits,
        iteration: int,
    ) -> None:
        """Take one sample of ``phase`` (``prev`` the one before, ``iteration`` the memory
        pass the estimator has counted so far)."""
        if phase != self._phase:
            self._phase = phase
            self._rate = None
            self._rates = []
            if phase == Phase.POSTCOPY and limits.postcopy_bandwidth_bps:
                self._rate = float(limits.postcopy_bandwidth_bps)
        if limits.max_bandwidth_bps != self._limit:
            if self._limit is not None and limits.max_bandwidth_bps is not None:
                self._rate = float(limits.max_bandwidth_bps)  # a new limit applies at once
                self._rates = []
            self._limit = limits.max_bandwidth_bps
        # QEMU's own memory_bps (bytes sent over its last rate window) is the hypervisor's
        # measurement; bytes moved between two polls jitter with QEMU's 100 ms bursts, so
        # they are only the fallback (disk mirror, or memory_bps not reported yet).
        inst: float | None = None
        alpha = 1.0
        if prev is not None and sample.elapsed_s > prev.elapsed_s:
            dt = sample.elapsed_s - prev.elapsed_s
            alpha = 1.0 - math.exp(-dt / self._cfg.rate_tau_s)
            if phase == Phase.DISK_MIRROR:
                # The block job reports progress in chunks of several MiB: average over
                # the whole mirror so far instead of poll to poll.
                if self._disk_origin is None:
                    if prev.disk_processed > 0:
                        self._disk_origin = (prev.elapsed_s, prev.disk_processed)
                else:
                    t0, p0 = self._disk_origin
                    if sample.elapsed_s - t0 > 0 and sample.disk_processed > p0:
                        inst = (sample.disk_processed - p0) / (sample.elapsed_s - t0)
                        alpha = 1.0
            elif sample.memory_bps <= 0:
                moved = sample.memory_processed - prev.memory_processed
                if moved > 0 and prev.memory_processed > 0:
                    inst = moved / dt
        if phase == Phase.POSTCOPY and sample.iteration <= iteration:
            # migrateStartPostCopy() returned but QEMU has not switched yet: that
            # sample's memory_bps is still the pre-copy rate.
            inst = None
        elif phase != Phase.DISK_MIRROR and sample.memory_bps > 0:
            inst = float(sample.memory_bps)
        if inst is None or inst <= 0:
            return
        self._rates = (self._rates + [inst])[-self._cfg.rate_window :]
        self._rate = inst if self._rate is None else self._rate + alpha * (inst - self._rate)

    def spread(self) -> float:
        """Relative instability of the transfer rate: 2 x coefficient of variation."""
        xs = self._rates
        if len(xs) < 3:
            return 0.1  # too few readings to tell: assume a modest wobble
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
        return min(max(2.0 * math.sqrt(var) / mean, 0.02), 0.3) if mean > 0 else 0.3

    def effective(self, limits: Limits) -> float:
        """The rate to plan with: the one seen, capped by the bandwidth limit outside
        post-copy (which has its own); 0 while unknown."""
        rate = self._rate or 0.0
        if limits.max_bandwidth_bps is not None and self._phase != Phase.POSTCOPY:
            rate = min(rate, float(limits.max_bandwidth_bps)) if rate > 0 else 0.0
        return rate


class PassLog:
    """The memory passes seen so far, and auto-converge's throttle along them."""

    def __init__(self, config: EstimatorConfig) -> None:
        self._cfg = config
        self._pass_start: float | None = None
        self._iteration = 0
        self._obs: list[PassObservation] = []
        self._boundaries: list[float] = []  # remaining at the start of passes >= 2
        self._boundary_times: list[float] = []  # job time at each of those starts
        self._boundary_iterations: list[int] = []  # the pass that began at each (seen)
        self._throttle: int | None = None  # auto-converge's CPU throttle (%), once seen
        self._boundary_throttles: list[int] = []  # the throttle at each pass boundary

    @property
    def iteration(self) -> int:
        """The memory pass under way (0 before the first)."""
        return self._iteration

    @property
    def pass_start(self) -> float | None:
        """Job time at which the pass under way began, once known."""
        return self._pass_start

    @property
    def observations(self) -> Sequence[PassObservation]:
        """Each finished pass long enough to measure, with its dirty rate."""
        return self._obs

    @property
    def boundaries(self) -> Sequence[float]:
        """The remaining at the start of each pass from the second on."""
        return self._boundaries

    @property
    def boundary_times(self) -> Sequence[float]:
        """Job time at each of those starts."""
        return self._boundary_times

    @property
    def boundary_iterations(self) -> Sequence[int]:
        """The pass number at each of those starts: several passes can end between two
        samples, and only the last one's start is seen."""
        return self._boundary_iterations

    def note_throttle(self, throttle: int | None) -> bool:
        """Take a sample's auto-converge throttle (``None``: not reported); True when QEMU
        has just begun to throttle."""
        if throttle is None:
            return False
        started = bool(throttle) and not self._throttle
        self._throttle = throttle
        return started

    def track(
        self,
        prev: JobSample | None,
        sample: JobSample,
        limits: Limits,
        bw: float,
        pass1_drain: Callable[[JobSample], tuple[float, float, float]],
    ) -> None:
        """Take one pre-copy sample (``prev`` the one before, ``bw`` the transfer rate):
        a pass boundary closes the pass that ended, placed where its remaining crossed the
        downtime threshold (``pass1_drain`` gives pass 1's drain factors)."""
        it = sample.iteration
        if it <= 0:
            return
        if self._pass_start is None or self._iteration == 0:
            if it == 1:
                # Pass 1 began when the first byte went: back off by what was sent.
                self._pass_start = max(
                    sample.elapsed_s - sample.memory_processed / max(bw, 1.0), 0.0
                )
            else:
                # Joined mid-migration (agent restart): this pass's start is unknown;
                # counting from now under-states its dirtying only until the next boundary.
                self._pass_start = sample.elapsed_s
            self._iteration = it
            return
        if it <= self._iteration or prev is None:
            return
        threshold = bw * limits.max_downtime_s
        drain = pass1_drain(prev)[0] if self._iteration == 1 else 1.0
        gap = sample.elapsed_s - prev.elapsed_s
        to_end = max(prev.memory_remaining - threshold, 0.0) / max(bw * drain, 1.0)
        end = prev.elapsed_s + min(to_end, gap)
        duration = end - self._pass_start
        if (
            it == self._iteration + 1
            and duration >= self._cfg.min_pass_for_rate_s
            and sample.dirty_pages_per_s > 0
        ):
            self._obs.append(
                PassObservation(self._iteration, duration, float(sample.dirty_bytes_per_s))
            )
        start_remaining = sample.memory_remaining + bw * (sample.elapsed_s - end)
        self._boundaries.append(float(start_remaining))
        self._boundary_times.append(end)
        self._boundary_iterations.append(it)
        self._boundary_throttles.append(sample.auto_converge_throttle or 0)
        self._pass_start = end
        self._iteration = it

    def auto_converge(self, limits: Limits) -> AutoConverge | None:
        """QEMU's throttle as the pass model follows it, once libvirt has reported one, or
        before QEMU has throttled when the capability is known to be on (declared by the
        host's migration policy, or read by the QMP backend)."""
        if not self._throttle:
            if not limits.auto_converge:
                return None
            return AutoConverge(0.0, high=self._high_count(), measured_at=0.0)
        return AutoConverge(
            self._throttle / 100.0,
            high=self._high_count(),
            measured_at=self._throttle_of_last_pass() / 100.0,
        )

    def _throttle_of_last_pass(self) -> int:
        """The throttle (%) the last measured pass ran under: the one at its start."""
        marks = self._boundary_throttles
        return marks[-2] if len(marks) >= 2 else 0

    def _high_count(self) -> int:
        """Where QEMU's count towards the next throttle step stands: the passes since the
        throttle last changed (QEMU steps every second qualifying sync)."""
        marks = self._boundary_throttles
        since = 0
        for before, after in zip(reversed(marks[:-1]), reversed(marks[1:]), strict=True):
            if before != after:
                break
            since += 1
        return since % 2
