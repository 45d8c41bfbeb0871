"""Replay one recorded trace through the agent's estimator and score it (``bench.eta``).

Every running source sample goes through ``MigrationEstimator`` exactly as the agent's replay
backend and tracker feed it (``estimates``); ``replay`` scores the ETA at checkpoints of the
true duration, the band and the verdict's flags; ``evaluate`` does both, with and without
the trace's pre-flight prior, and scores ``predict()``. Aggregating and printing is
``bench.eta``'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from migwatch.agent.backends.trace import ReplayStep, Trace, read_trace
from migwatch.agent.backends.tracefacts import (
    free_of,
    limits_at,
    memory_size_hint,
    preflight_of,
    resident_of,
    source_steps,
    true_duration_s,
)
from migwatch.agent.config import AgentConfig
from migwatch.agent.estimate.estimator import (
    EstimatorConfig,
    MigrationEstimator,
    fit_preflight,
    predict,
)
from migwatch.agent.estimate.steady import verdict_class
from migwatch.agent.model import Convergence, Estimate, Preflight

from bench.eta_limits import Checkpoint, checkpoints

CHECKPOINTS = (0.10, 0.25, 0.50, 0.75)
FLAGS = (Convergence.NOT_CONVERGING, Convergence.STALLED)
#: A pre-flight whose longest period is at least this is the agent's ladder (1-16 s), not
#: the shared traces' 1/2/4 s.
LADDER_MIN_S = 8.0


@dataclass
class Run:
    """One replay of one trace through the estimator."""

    errors: dict[str, float | None] = field(default_factory=dict)  # checkpoint -> err
    naive: dict[str, float | None] = field(default_factory=dict)
    inside: dict[str, bool] = field(default_factory=dict)
    band_share_all: float | None = None  # share of all samples whose band holds the truth
    flag_s: float | None = None
    flag_iteration: int | None = None
    naive_flag_s: float | None = None
    naive_flag_iteration: int | None = None
    flags: int = 0  # samples flagged
    cleared_iteration: int | None = None  # the pass from which no sample is flagged any more
    naive_flags: int = 0
    # Every sample after the first iteration boundary (evidence measured): err, naive err.
    after_pass1: list[tuple[float | None, float | None]] = field(default_factory=list)
    # The memory pass at each checkpoint's sample (0: none yet).
    cp_iteration: dict[str, int] = field(default_factory=dict)
    # Changes of the verdict between decided classes (CONVERGING, SLOW, flagged), an
    # UNKNOWN in between not counting as a class (steady.verdict_class).
    reversals: int = 0


@dataclass
class TraceReport:
    name: str
    path: str
    outcome: str
    true_s: float | None
    intervened: bool
    preflight: bool
    resident: bool  # the trace carries the source QEMU's resident memory (memstats)
    # The pre-flight reaches the agent's long periods (>= LADDER_MIN_S): with resident
    # memory, everything the libvirt agent measures before a migration (the mw4 set).
    ladder: bool
    live: Run
    with_prior: Run | None
    # Started with VIR_MIGRATE_AUTO_CONVERGE: QEMU throttles the guest, and libvirt shows it
    # only from the first throttle, so a flag before that is told apart from a false one.
    auto_converge: bool = False
    predict_err: float | None = None
    predict_inside: bool | None = None
    predict_verdict: str | None = None
    predict_eta_s: float | None = None
    first_action_s: float | None = None
    abort_s: float | None = None  # when an operator aborted it (an ``abort`` action)
    # The checkpoints from 25 % with hindsight facts (eta_limits), completed traces only.
    hindsight: list[Checkpoint] = field(default_factory=list)
    # "tuning (lab)", "tuning (rp)", "held-out (shared)" or "held-out (rp)": ``split_of``.
    split: str = "tuning (lab)"

    @property
    def agent_run(self) -> Run:
        """The replay as the agent runs it: with the pre-flight when the trace has one."""
        return self.with_prior if self.with_prior is not None else self.live

    @property
    def self_converging(self) -> bool:
        return self.outcome == "completed" and not self.intervened and self.true_s is not None


def naive_eta(
    stats: Mapping[str, object], prev: Mapping[str, object] | None, dt: float
) -> float | None:
    def num(d: Mapping[str, object], k: str) -> float:
        v = d.get(k, 0)
        return float(v) if isinstance(v, (int, float)) else 0.0

    remaining = num(stats, "data_remaining")
    bps = num(stats, "memory_bps")
    if bps <= 0 and prev is not None and dt > 0:
        bps = (num(stats, "data_processed") - num(prev, "data_processed")) / dt
    if bps <= 0:
        return None
    return remaining / bps


def agent_estimator_config() -> EstimatorConfig:
    """The estimator config a default agent runs with (``server.Agent``: the slow budget)."""
    return EstimatorConfig(budget_s=AgentConfig().slow_budget_s)


def estimates(
    trace: Trace, preflight: Preflight | None, config: EstimatorConfig, use_resident: bool = True
) -> list[tuple[ReplayStep, Estimate]]:
    """Every running source sample with the estimate after it, fed as the agent feeds its
    estimator (replay backend -> tracker): same samples, limits, post-copy flag, RAM size
    and pre-flight."""
    est = MigrationEstimator(
        config,
        preflight,
        memory_bytes=memory_size_hint(trace),
        resident_bytes=resident_of(trace) if use_resident else None,
        free_bytes=free_of(trace) if use_resident else None,
    )
    return [
        (step, est.observe(step.sample, step.limits, postcopy=step.postcopy))
        for step in source_steps(trace)
    ]


def with_naive(
    trace: Trace, preflight: Preflight | None, config: EstimatorConfig, use_resident: bool = True
) -> Iterator[tuple[ReplayStep, Estimate, float | None]]:
    """``estimates`` with the naive remaining / rate ETA on the same sample beside each."""
    prev_stats: Mapping[str, object] | None = None
    prev_elapsed = 0.0
    for step, e in estimates(trace, preflight, config, use_resident):
        elapsed = step.sample.elapsed_s
        yield step, e, naive_eta(step.stats, prev_stats, elapsed - prev_elapsed)
        prev_stats, prev_elapsed = step.stats, elapsed


def replay(
    trace: Trace, preflight: Preflight | None, config: EstimatorConfig, use_resident: bool = True
) -> Run:
    """Replay one trace and score it (see METHOD)."""
    true = true_duration_s(trace)
    points: list[tuple[float, Estimate, float | None, int]] = []
    run = Run()
    last_iter = 0
    start_remaining: list[int] = []
    decided: str | None = None
    for step, e, naive in with_naive(trace, preflight, config, use_resident):
        s = step.sample
        if e.convergence is not Convergence.UNKNOWN:
            cls = verdict_class(e.convergence)
            if decided is not None and cls != decided:
                run.reversals += 1
            decided = cls
        points.append((s.elapsed_s, e, naive, s.iteration))
        if e.convergence in FLAGS:
            run.flags += 1
            run.cleared_iteration = None
            if run.flag_s is None:
                run.flag_s, run.flag_iteration = s.elapsed_s, s.iteration
        elif run.flags and run.cleared_iteration is None:
            run.cleared_iteration = s.iteration
        if s.iteration > last_iter and not step.postcopy:
            if s.iteration >= 3 and start_remaining and s.memory_remaining >= start_remaining[-1]:
                run.naive_flags += 1
                if run.naive_flag_s is None:
                    run.naive_flag_s, run.naive_flag_iteration = s.elapsed_s, s.iteration
            if s.iteration >= 2:
                start_remaining.append(s.memory_remaining)
            last_iter = s.iteration
    if true is None:
        return run
    for frac in CHECKPOINTS:
        key = f"{int(frac * 100)}%"
        at = [p for p in points if p[0] <= frac * true]
        if not at:
            run.errors[key] = run.naive[key] = None
            run.inside[key] = False
            run.cp_iteration[key] = 0
            continue
        elapsed, e, naive, iteration = at[-1]
        run.cp_iteration[key] = iteration
        run.errors[key] = None if e.eta_s is None else abs(elapsed + e.eta_s - true) / true
        run.naive[key] = None if naive is None else abs(elapsed + naive - true) / true
        run.inside[key] = _inside(e, true - elapsed)
    iters = [st.sample.iteration for st in source_steps(trace)]
    for (t, e, naive, _), it in zip(points, iters, strict=True):
        if it >= 2 and t < true:
            run.after_pass1.append(
                (
                    None if e.eta_s is None else abs(t + e.eta_s - true) / true,
                    None if naive is None else abs(t + naive - true) / true,
                )
            )
    held = [_inside(e, true - t) for t, e, _, _ in points if t < true]
    run.band_share_all = sum(held) / len(held) if held else None
    return run


def _inside(e: Estimate, remaining: float) -> bool:
    return (
        e.eta_low_s is not None
        and e.eta_high_s is not None
        and e.eta_low_s <= remaining <= e.eta_high_s
    )


def _auto_converge(trace: Trace) -> bool:
    """Started with VIR_MIGRATE_AUTO_CONVERGE (the meta line's flags)."""
    return trace.meta is not None and "VIR_MIGRATE_AUTO_CONVERGE" in trace.meta.flag_names


def _predict(
    trace: Trace, preflight: Preflight, config: EstimatorConfig, use_resident: bool = True
) -> Estimate | None:
    steps = list(source_steps(trace))
    memory = next((st.sample.memory_total for st in steps if st.sample.memory_total > 0), 0)
    disk = next((st.sample.disk_total for st in steps if st.sample.disk_total > 0), 0)
    limits = limits_at(trace, 0.0)
    bw = limits.max_bandwidth_bps
    if not memory or not bw:
        return None
    fit = fit_preflight(
        preflight,
        config.preflight_noise_mib,
        config.preflight_saturation_chi2,
        memory_mib=memory / 2**20,
    )
    return predict(
        memory,
        disk,
        fit.rate_bps,
        fit.hot_bytes,
        float(bw),
        limits.max_downtime_s,
        dirty_rate_sigma_bps=fit.rate_sigma_bps,
        hot_set_low_bytes=fit.hot_low_bytes,
        resident_bytes=resident_of(trace) if use_resident else None,
        free_bytes=free_of(trace) if use_resident else None,
        limits=limits,
        config=config,
        auto_converge=_auto_converge(trace),  # a scheduler knows the flags it will use
    )


TUNING = "tuning (lab)"
TUNING_RP = "tuning (rp)"
HELD_OUT_SHARED = "held-out (shared)"
HELD_OUT_RP = "held-out (rp)"


def split_of(path: Path) -> str:
    """Which split a trace belongs to. ``shared/`` (the ten oldest recordings, from another
    lab, job stats only) is held out: the estimator is never tuned on it. In ``rp/`` (the
    real-program recordings) the split was fixed before recording, in ``rp/SPLIT.md``: a
    table row whose split cell reads ``**held-out**``; the rest of ``rp/`` is tuning (rp).
    ``rp2/``, ``rp3/``... (later real-program batches, each recorded after the one before had
    been scored) are held out whole (their ``SPLIT.md``). Everything else (the lab's synthetic
    guests) is tuning (lab)."""
    folder = path.parent.name
    if folder == "shared":
        return HELD_OUT_SHARED
    if re.fullmatch(r"rp\d+", folder):
        return f"held-out ({folder})"
    split_md = path.parent / "SPLIT.md"
    if folder == "rp" and split_md.is_file():
        for line in split_md.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells and cells[0] == path.stem:
                return HELD_OUT_RP if "held-out" in cells[-1] else TUNING_RP
        return HELD_OUT_RP  # not in the table: never tuned on
    return TUNING


def evaluate(path: Path, config: EstimatorConfig, use_resident: bool = True) -> TraceReport:
    trace = read_trace(path)
    true = true_duration_s(trace)
    result = trace.result
    pf = preflight_of(trace)
    report = TraceReport(
        name=trace.name,
        path=str(path),
        outcome=result.outcome if result else "?",
        true_s=true,
        intervened=bool(trace.actions),
        preflight=pf is not None,
        resident=use_resident and resident_of(trace) is not None,
        ladder=pf is not None and max(pf.rates, default=0.0) >= LADDER_MIN_S,
        auto_converge=_auto_converge(trace),
        live=replay(trace, None, config, use_resident),
        with_prior=replay(trace, pf, config, use_resident) if pf is not None else None,
        first_action_s=next((a.dt for a in trace.actions if a.dt is not None), None),
        abort_s=next(
            (a.dt for a in trace.actions if a.action == "abort" and a.dt is not None), None
        ),
        hindsight=checkpoints(trace, [f for f in CHECKPOINTS if f >= 0.25]),
        split=split_of(path),
    )
    if pf is not None:
        p = _predict(trace, pf, config, use_resident)
        if p is not None:
            report.predict_verdict = p.convergence.name
            report.predict_eta_s = p.eta_s
            if true is not None and p.eta_s is not None:
                report.predict_err = abs(p.eta_s - true) / true
                report.predict_inside = _inside(p, true)
            elif true is not None:
                report.predict_inside = False
    return report


# --- aggregation and printing ----------------------------------------------------------
