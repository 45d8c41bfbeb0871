"""How honest is the evacuation band? Recorded migrations grouped into pretend hosts.

Method: every recorded trace (bench/traces, bench/traces/shared) that completed by itself
(no actions) and carries a pre-flight measurement gives one guest: ``predict()``'s
duration and band from what the agent knows before the migration (``bench.eta_replay``),
and the true job time. Seeded random groups of K of these guests play one host each;
``evacuation.plan_evacuation`` plans each group at concurrency C with the agent's band
settings, and the group's true total is the same schedule (the plan's order) run with the
true durations. Reported: the share of groups whose true total is inside the band, the
median and p90 error of the central total, and the band's median width relative to the
central total, for several values of the common-error factor (``correlation``).

Caveat: the guests of one group were recorded at different times, alone on the link; a
real host's migrations share its link and CPU. The lab test (tests/test_lab_evacuation.py)
measures real evacuations.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from migwatch.agent.backends.trace import read_trace
from migwatch.agent.backends.tracefacts import preflight_of, true_duration_s
from migwatch.agent.estimate.evacuation import BandConfig, Job, Spread, plan_evacuation, schedule

from bench.eta import DEFAULT_DIRS
from bench.eta_replay import _predict, agent_estimator_config


@dataclass(frozen=True, slots=True)
class Guest:
    name: str
    predicted: Spread
    true_s: float


def guests() -> list[Guest]:
    """The recorded guests that completed by themselves, with a pre-flight prediction."""
    cfg = agent_estimator_config()
    found = []
    for path in sorted(p for d in DEFAULT_DIRS for p in d.glob("*.jsonl")):
        trace = read_trace(path)
        pf = preflight_of(trace)
        true = true_duration_s(trace)
        if pf is None or trace.actions or true is None:
            continue
        if trace.result is None or trace.result.outcome != "completed":
            continue
        est = _predict(trace, pf, cfg)
        if est is None or est.eta_s is None or est.eta_low_s is None:
            continue
        high = est.eta_high_s if est.eta_high_s is not None else float("inf")
        found.append(
            Guest(
                trace.name,
                Spread(est.eta_s, min(est.eta_low_s, est.eta_s), max(high, est.eta_s)),
                true,
            )
        )
    return found


def score(
    pool: Sequence[Guest],
    size: int,
    concurrency: int,
    correlation: float,
    groups: int,
    seed: int,
    guest_coverage: float = BandConfig().guest_coverage,
) -> dict[str, float]:
    """Coverage, central error and band width over ``groups`` random hosts of ``size`` guests."""
    pick = random.Random(seed)
    inside, errors, widths = 0, [], []
    for g in range(groups):
        host = pick.sample(list(pool), size)
        jobs = [Job(str(i), h.name, h.predicted) for i, h in enumerate(host)]
        plan = plan_evacuation(
            jobs,
            concurrency,
            random.Random(g),
            band=BandConfig(draws=400, correlation=correlation, guest_coverage=guest_coverage),
        )
        true_of = {str(i): h.true_s for i, h in enumerate(host)}
        true_total = schedule([true_of[k] for k in plan.order], concurrency)[1]
        inside += plan.total.low <= true_total <= plan.total.high
        errors.append(abs(plan.total.central - true_total) / true_total)
        widths.append((plan.total.high - plan.total.low) / plan.total.central)
    errors.sort()
    return {
        "coverage": inside / groups,
        "err_median": statistics.median(errors),
        "err_p90": errors[int(0.9 * (len(errors) - 1))],
        "width_median": statistics.median(widths),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.evacuation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--groups", type=int, default=200, help="pretend hosts per row")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--guest-coverage",
        type=float,
        default=BandConfig().guest_coverage,
        help="what each guest's band is read as (default: the agent's)",
    )
    args = parser.parse_args(argv)
    pool = guests()
    if len(pool) < 8:
        print(f"bench.evacuation: only {len(pool)} usable traces", file=sys.stderr)
        return 1
    single = sum(g.predicted.low <= g.true_s <= g.predicted.high for g in pool) / len(pool)
    print(__doc__)
    print(f"{len(pool)} guests; single-guest band coverage {single:.0%}")
    print(
        f"{'guests':>6} {'conc':>4} {'corr':>4}  {'coverage':>8} {'err p50':>7} "
        f"{'err p90':>7} {'width p50':>9}"
    )
    for size in (3, 5, 8):
        for concurrency in (1, 2):
            for correlation in (0.0, 0.5, 1.0):
                s = score(
                    pool,
                    size,
                    concurrency,
                    correlation,
                    args.groups,
                    args.seed,
                    args.guest_coverage,
                )
                print(
                    f"{size:>6} {concurrency:>4} {correlation:>4.1f}  {s['coverage']:>8.0%}"
                    f" {s['err_median']:>7.0%} {s['err_p90']:>7.0%} {s['width_median']:>9.0%}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
