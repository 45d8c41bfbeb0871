"""Information limits of the ETA benchmark, measured in hindsight.

At a checkpoint in pass 1 (or during the disk mirror) two things decide the remaining time
that the job stats do not show yet:

* the guest's dirty rate: QEMU syncs the dirty bitmap only when pass 1 ends, so nothing in
  the stats depends on it before (``memory_dirty_rate`` is 0 in pass 1);
* the never-written pages pass 1 has still to walk: QEMU sends them as zero pages almost for
  free, and they gather at the top of the guest's RAM, which pass 1 reaches last.

This module scores, on the benchmark's own checkpoints, estimators that are told one of
these in hindsight (from the trace's later samples and completed stats) and have to guess
only the other, with the best constant chosen after the fact. What error is left is what the
missing information costs, whatever the model. Nothing here is used by the estimator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from migwatch.agent.backends.trace import Trace
from migwatch.agent.backends.tracefacts import limits_at, source_steps, true_duration_s


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a checkpoint sample said, and what the rest of its trace revealed."""

    trace: str
    fraction: float
    true_s: float
    phase: str  # "disk" (mirror, memory not started), "pass1", "later"
    pass1_start_s: float
    pass1_end_s: float
    bandwidth_bps: float
    memory_total: float
    pass1_left: float  # memory_remaining in pass 1 (all of RAM during the mirror)
    zero_seen: float  # never-written bytes pass 1 had walked by then
    zero_total: float  # never-written bytes pass 1 met in all (completed stats)

    @property
    def zero_ahead(self) -> float:
        return max(self.zero_total - self.zero_seen, 0.0)


def _num(stats: Mapping[str, object], key: str) -> float:
    v = stats.get(key, 0)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def _zero_total(trace: Trace, page: float) -> float | None:
    """Zero pages sent over the whole job (``memory_constant`` of the completed stats)."""
    result = trace.result
    if result is None:
        return None
    for stats in (*result.job_completed_event.values(), result.src_completed):
        if "memory_constant" in stats:
            return _num(stats, "memory_constant") * page
    return None


def checkpoints(trace: Trace, fractions: Sequence[float]) -> list[Checkpoint]:
    """The benchmark's checkpoint samples of a completed trace, with hindsight facts."""
    true = true_duration_s(trace)
    bw = limits_at(trace, 0.0).max_bandwidth_bps
    steps = list(source_steps(trace))
    mem = [st for st in steps if st.sample.iteration >= 1]
    if true is None or not bw or not mem:
        return []
    page = float(mem[0].sample.page_size)
    zero_total = _zero_total(trace, page)
    if zero_total is None:
        return []
    first = mem[0].sample
    start = first.elapsed_s - first.memory_processed / bw
    later = [st.sample.elapsed_s for st in steps if st.sample.iteration >= 2]
    last1 = [st.sample.elapsed_s for st in steps if st.sample.iteration == 1]
    end = (last1[-1] + later[0]) / 2.0 if later and last1 else true
    out: list[Checkpoint] = []
    for frac in fractions:
        at = [st for st in steps if st.sample.elapsed_s <= frac * true]
        if not at:
            continue
        s = at[-1].sample
        if s.iteration == 0:
            phase, left, seen = "disk", float(first.memory_total), 0.0
        elif s.iteration == 1:
            walked = s.memory_total - s.memory_remaining
            phase, left = "pass1", float(s.memory_remaining)
            seen = max(walked - s.memory_processed, 0.0) if s.memory_processed > 0 else 0.0
        else:
            phase, left, seen = "later", 0.0, zero_total
        out.append(
            Checkpoint(
                trace.name,
                frac,
                true,
                phase,
                start,
                end,
                float(bw),
                float(first.memory_total),
                left,
                seen,
                zero_total,
            )
        )
    return out


def _p90(xs: Sequence[float]) -> float:
    vals = sorted(xs)
    return vals[max(math.ceil(0.9 * len(vals)) - 1, 0)] if vals else math.nan


def _best(errors: Callable[[float], list[float]], grid: Sequence[float]) -> tuple[float, float]:
    """(lowest p90, the constant achieving it) over ``grid``."""
    return min((_p90(errors(c)), c) for c in grid)


def dirty_unknown(cps: Sequence[Checkpoint]) -> tuple[float, float]:
    """p90 error of an estimate that knows exactly when pass 1 ends but not the dirty rate:
    the time after pass 1 as the best single multiple ``c`` of pass 1's length (chosen in
    hindsight); exact from pass 2 on. Returns (p90, c)."""

    def errors(c: float) -> list[float]:
        out = []
        for cp in cps:
            if cp.phase == "later":
                out.append(0.0)
                continue
            length = cp.pass1_end_s - cp.pass1_start_s
            out.append(abs(cp.pass1_end_s + c * length - cp.true_s) / cp.true_s)
        return out

    return _best(errors, [i / 20 for i in range(61)])


def _zero_error(cp: Checkpoint, guess: float) -> float:
    return abs(cp.zero_ahead - guess) / cp.bandwidth_bps / cp.true_s


def zero_unknown(cps: Sequence[Checkpoint]) -> dict[str, float]:
    """p90 error left by the zero pages ahead alone (everything else exact), for three
    guesses: the share seen so far (the estimator's central rule), none, and the best fixed
    share of RAM never written (chosen in hindsight, minus what was seen)."""
    seen_share = [
        _zero_error(
            cp,
            (cp.zero_seen / (cp.memory_total - cp.pass1_left)) * cp.pass1_left
            if cp.phase == "pass1" and cp.memory_total > cp.pass1_left
            else 0.0,
        )
        if cp.phase != "later"
        else 0.0
        for cp in cps
    ]
    none = [_zero_error(cp, 0.0) if cp.phase != "later" else 0.0 for cp in cps]

    def fixed(q: float) -> list[float]:
        return [
            _zero_error(cp, min(max(q * cp.memory_total - cp.zero_seen, 0.0), cp.pass1_left))
            if cp.phase != "later"
            else 0.0
            for cp in cps
        ]

    best, q = _best(fixed, [i / 100 for i in range(0, 61, 2)])
    return {
        "seen_share": _p90(seen_share),
        "none": _p90(none),
        "best_fixed": best,
        "best_fixed_share": q,
    }


def predict_zero_unknown(cps: Sequence[Checkpoint]) -> dict[str, float]:
    """The same for ``predict()`` (one figure per trace: before the start, all of pass 1's
    zero pages are ahead): no zero pages, and the best fixed share chosen in hindsight."""

    def fixed(q: float) -> list[float]:
        return [
            abs(cp.zero_total - q * cp.memory_total) / cp.bandwidth_bps / cp.true_s for cp in cps
        ]

    best, q = _best(fixed, [i / 100 for i in range(0, 61, 2)])
    return {"none": _p90(fixed(0.0)), "best_fixed": best, "best_fixed_share": q}


def pass1_share(cps: Sequence[Checkpoint]) -> float:
    """Share of the checkpoints still in pass 1 or the disk mirror."""
    return sum(cp.phase != "later" for cp in cps) / len(cps) if cps else math.nan
