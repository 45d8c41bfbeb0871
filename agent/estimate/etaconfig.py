"""``EstimatorConfig``: the estimator's tunables, shared by its modules. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace

from migwatch.agent.model import MIB


@dataclass(frozen=True, slots=True)
class EstimatorConfig:
    """Tunables of the estimator. Each one is a statement about pre-copy or about the
    operator's tolerance, not a fit to recorded traces."""

    # A migration whose projected total job time exceeds this is SLOW.
    budget_s: float = 600.0  # the agent's --slow-budget default
    # Time constant (s, job clock) of the transfer-rate EWMA: a few QEMU rate windows
    # (100 ms) and a few polls, so one late poll does not swing the ETA.
    rate_tau_s: float = 2.0
    # Samples kept to measure how unstable the transfer rate is (widens the band).
    rate_window: int = 16
    # Iteration boundaries the verdict looks back over ("windows, not single samples").
    pass_window: int = 3
    # QEMU re-checks pending bytes after each rate-limited burst (BUFFER_DELAY, 100 ms).
    check_interval_s: float = 0.1
    # QEMU refreshes memory_dirty_rate only over periods of >= 1 s.
    min_pass_for_rate_s: float = 1.0
    # dirty rate / bandwidth at which pre-copy is called NOT_CONVERGING: at 0.9 each pass
    # removes only a tenth of what is left, ~30 passes per factor of 20.
    not_converging_ratio: float = 0.9
    # Relative change that counts as a real difference between two dirty-rate readings
    # (pass times are known to a poll interval) and as "no longer falls" at boundaries.
    rate_tolerance: float = 0.2
    # STALLED needs the boundary remaining above this multiple of the switch-over
    # threshold: near the threshold the short tail passes hover by design.
    stall_margin: float = 2.0
    # STALLED also needs the flat window to span this much job time: the final burst of a
    # hard convergence is several short passes whose remaining hovers for a second or two
    # before the switch-over; a stall that needs an operator lasts far longer.
    stall_min_s: float = 5.0
    # Pass boundaries over which a per-sample verdict must disagree with the one shown
    # before the first reversal (``steady.SteadyVerdict``); each later one needs twice.
    reversal_boundaries: int = 1
    # DEFAULT basis (pass 1, nothing measured): assumed dirty rate as a fraction of the
    # bandwidth, and the upper edge of the band. A guest that is expected to migrate at
    # all dirties well below the link; the band, not the central value, carries the doubt.
    default_dirty_ratio: float = 0.2
    default_dirty_ratio_high: float = 0.8
    # A single live dirty-rate reading from a long pass may be capped by the hot set
    # (a lower bound): until two passes of different lengths agree, the band's upper
    # edge assumes the true rate may be this much higher, and at least what the DEFAULT
    # band assumed in pass 1 (default_dirty_ratio_high x bandwidth).
    live_rate_headroom: float = 0.5
    # Before the first boundary, the band's slow edge with a pre-flight dirties at least
    # this share of the bandwidth with no hot-set cap (``DirtyModel.slow_floor``; 0: off).
    preflight_doubt: float = 0.3
    # When the first live reading is below the pre-flight rate and may be capped by the hot
    # set, the central rate lies this far from the live reading towards the pre-flight's
    # (1: the pre-flight's; the band spans both either way).
    preflight_over_live: float = 0.5
    # The share of the guest's RAM that may never have been written (zero pages, sent
    # almost for free). The band's optimistic edge lets pass 1's never-written pages grow
    # to this share of all RAM; the central value uses the share seen so far, or none
    # before pass 1 has walked anything. A freshly booted or over-provisioned guest
    # easily has half its RAM free.
    zero_share_low: float = 0.5
    # Resident memory of the hypervisor process that is not guest RAM (QEMU's binary,
    # heap, TCG code cache), subtracted from virDomainMemoryStats' `rss` to estimate the
    # guest's non-zero bytes when the agent has it (``resident_bytes``). Measured apart from
    # the benchmark traces: 8 lab guests (QEMU 7.2 TCG, 384-1152 MiB, 25-94 % filled) had
    # rss - non-zero RAM = 174-177 MiB; 170 MiB keeps the central value on the slow side.
    # The band's slow edge uses 0 (rss as a hard bound), the fast edge twice this.
    # Much smaller under KVM (no code cache): set it per host.
    resident_overhead_bytes: int = 170 * MIB
    # Resident memory can be a loose bound (transparent huge pages: one touched 4 KiB page
    # makes 2 MiB resident): the band's fast edge allows this share of RAM to be never
    # written whatever rss says, until pass 1's walk shows otherwise
    # (``passmodel.pass1_drains_resident``).
    resident_loose_share: float = 0.6
    # ... and the central value leans this far from rss's bound towards that (rp tuning
    # traces: rss over-stated the non-zero bytes by 0-340 MiB of 1-2 GiB).
    resident_loose_weight: float = 0.25
    # A migration sending at under this share of its bandwidth limit is not held back by
    # the link (a TCG guest under load starves QEMU's migration thread of CPU): its rate can
    # jump to the limit at any time, so the band's fast edge assumes the limit.
    starved_ratio: float = 0.7
    # ... and pass 1's central rate leans this far from the rate seen towards the limit (rp
    # tuning traces: a loaded TCG guest's first pass sent at 40-55 MiB/s, then at the 90-120
    # MiB/s limit for its last seconds).
    starved_lean: float = 0.15
    # Per migration, the wall time a drain pays outside the job's own clock (the ETA and
    # every prediction are of the job's ``time_elapsed``): the source QEMU's teardown and
    # libvirt's Finish/Confirm after the switch-over, before the migrate call returns and the
    # next guest's slot frees. 56 completed lab traces (QEMU 7.2 TCG, bench/traces/INDEX.md,
    # migrate call minus time_elapsed): 1.2-2.1 s, median 1.6 s. A drain adds it to every
    # guest; the band's edges take 0.75x and 2x of it (a loaded host tears down slower).
    # Set it per host (agent --migration-overhead): it depends on the hypervisor's build and load.
    migration_overhead_s: float = 1.6
    # Pre-flight page-sampling noise when the guest's RAM is not known, as MiB of distinct
    # pages per reading (lab: sd 10.7 MiB/s at 1 s, 7.7 at 2 s, 2.7 at 4 s on a 1 GiB guest).
    # With the RAM known the fit uses the binomial noise of QEMU's 512 sampled pages per GiB
    # instead (``dirtyfit.fit_preflight``), which grows with the reading.
    preflight_noise_mib: float = 10.7
    # chi-square improvement needed to prefer a saturating (hot set) pre-flight fit over a
    # flat rate: one extra parameter at about 2 sigma.
    preflight_saturation_chi2: float = 4.0
    # Band floor: a poll interval and the tail's 100 ms checks make +-0.5 s unavoidable,
    # and bandwidth is never exactly constant.
    band_floor_s: float = 0.5
    band_floor_rel: float = 0.05
    # How far the central dirty rate moves towards the fall per pass that the remaining at
    # the pass boundaries shows, when they fall faster than the model says
    # (``livemodel.GuestFacts.boundary_checked``; 0: off).
    boundary_ratio_weight: float = 1.0
    # The central plan counts at most this many times the passes so far as still to come
    # (at least more_passes_min), the band's slow edge all the arithmetic says: near a rate
    # of one, the geometric tail's length swings with every percent of the rate, and a
    # migration that has needed n passes rarely needs many times n more before its
    # workload or QEMU's checks change the picture (0: off).
    more_passes_factor: float = 1.0
    more_passes_min: int = 3
    # ... only where the central fall per pass (dirty rate / bandwidth) is at least this:
    # below it the tail is short and well determined.
    more_passes_rho: float = 0.85
    # A predicted end that keeps moving (``drift.EndDrift``) after pass 1: the history kept
    # (s of job time), the span it needs before it is trusted, and the largest slope it may
    # take (0: off). A pass boundary makes the predicted end jump on new evidence; the span
    # keeps one such jump from reading as drift.
    drift_window_s: float = 20.0
    drift_min_span_s: float = 4.0
    drift_max_slope: float = 0.5
    # Beyond budget_s x this the plan counts as never finishing.
    horizon_factor: float = 10.0
    # The largest max downtime and bandwidth (x the rate now seen) a recommendation may
    # propose; past them, and without post-copy, the remedy is to abort.
    downtime_ceiling_s: float = 2.0
    bandwidth_ceiling_factor: float = 4.0


#: The configuration used when none is given (frozen, so one shared value is safe).
DEFAULT_CONFIG = EstimatorConfig()


def with_overhead(
    config: EstimatorConfig, overhead_bytes: int | None, migration_overhead_s: float | None = None
) -> EstimatorConfig:
    """``config`` with what was learned on this host, where there is something: the
    resident-memory overhead and the teardown after each job."""
    if overhead_bytes is not None and overhead_bytes != config.resident_overhead_bytes:
        config = replace(config, resident_overhead_bytes=max(int(overhead_bytes), 0))
    if migration_overhead_s is not None and migration_overhead_s != config.migration_overhead_s:
        config = replace(config, migration_overhead_s=max(float(migration_overhead_s), 0.0))
    return config
