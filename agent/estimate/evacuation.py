"""How long until a host is empty: the evacuation plan (``EstimateEvacuation``). Pure.

No I/O, no clock: the servicer passes in each guest's predicted duration (``prediction``)
and each migration in flight's live ETA, and a seeded ``random.Random`` for the band.

**Scheduling.** A drain runs ``concurrency`` migrations at a time (nova's
``max_concurrent_live_migrations``, default 1) and starts the next guest as soon as a slot
frees: list scheduling. Migrations already in flight hold their slots from now until their
live ETA and are never reordered; when more are in flight than ``concurrency`` allows, the
first queued guest waits until enough of them have ended. The plan's total is the makespan:
the latest end over the migrations in flight and the planned guests.

**Order.** When the caller gives none, guests start longest first (Graham's LPT rule for
makespan: within 4/3 of the best order, and the classic answer because a long guest started
last leaves the other slots idle while it runs). Ties go by name so a plan is reproducible.
At concurrency 1 every order gives the same total; LPT is kept there too so the order does
not change when the operator raises concurrency.

**Guests that would not finish.** A guest whose prediction has no duration (it would not
converge under the limits and flags the request gave) is *left out* of the schedule and of
the total, and named in ``Plan.blocked``; the servicer attaches its remedy. The total is then
the time until every other guest has left, and ``Plan.empties`` is False: the host is not
empty until someone applies the remedy. (A guest the request allows to be switched to
post-copy is not left out: the servicer gives it the post-copy duration, see
``post_copy_spread``.) A migration in flight that will not end by itself is left out the
same way and is assumed not to hold a slot: the operator must act on it (abort or remedy)
anyway.

**The band of the total.** Each guest's (low, central, high) is read as the 2.5th, 50th and
97.5th percentile (``guest_coverage`` 0.95: ``predict()``'s band held 49 of 51 recorded true
durations, 96 %, ``python -m bench.evacuation``) of a two-piece normal distribution: normal
below the central value with the spread that puts ``low`` at the 2.5th percentile, normal
above it with the spread that puts ``high`` at the 97.5th, cut at zero. The durations are
not independent: the guests of one host share the link, the measurement method and the
model's biases, so an error on one tends to come with an error the same way on the others,
and treating them as independent would shrink the band of a sum by cancellation that does
not happen. Draws use
a Gaussian copula with a common factor (``correlation``, default 0.5): each guest's normal
score is ``sqrt(rho) * common + sqrt(1 - rho) * own``. At ``correlation=1`` the band is the
conservative interval rule (the plan at everyone's low, the plan at everyone's high); at 0 it
is the independent one. Each draw is scheduled in the plan's fixed order (the operator starts
guests in that order whatever their durations turn out to be), and the band is the
``total_coverage`` central range of the draws' makespans (10th to 90th percentile), widened
if needed to contain the central total (the plan at every central value). On hosts of 3 to
8 recorded guests this band held the true total in 90-100 % of cases at about +-18 % of the
total (``bench.evacuation``; those guests migrated alone, so their errors share less than a
real host's would, which is why the common factor stays at 0.5 rather than the 0 they
suggest). An open guest band (``high`` infinite: its
slow edge does not converge) leaves the total's band open above as soon as its draws land
there.

**Migrations at once slow each other only through what they share.** With ``link_bandwidth``
the plan splits the link evenly (``shared_bandwidth``); without it, each migration is
predicted as if alone, and the band adds nothing for concurrency. That is what the lab shows
when the bottleneck is not shared: two TCG migrations at once, 40 MiB/s each, on a 2-core
machine also running other engineers' guests, took -10 % to +13 % of the job time each took
alone (tests/test_lab_evacuation.py, docs/BENCHMARKS.md), well inside each guest's band.
A host whose migrations do share a bottleneck (its NIC, or a CPU too small for their
threads) must say so with ``link_bandwidth``: a band widened for every host would be wrong
for the ones that do not share.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

#: Normal scores are drawn by inverse CDF from one uniform each: one RNG stream, reproducible.
_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class Spread:
    """A duration in seconds with its band; ``high`` may be ``math.inf`` (open above)."""

    central: float
    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.central <= self.high:
            raise ValueError(f"a spread needs 0 <= low <= central <= high, got {self}")


@dataclass(frozen=True, slots=True)
class Job:
    """One guest to move, or one migration in flight.

    ``spread`` is None when it would not finish by itself (left out of the plan).
    """

    key: str  # domain UUID
    name: str
    spread: Spread | None
    in_flight: bool = False


@dataclass(frozen=True, slots=True)
class Slotted:
    """A job placed in the plan: when it starts and ends at central durations."""

    key: str
    order: int  # start position among the planned guests, from 1; 0 for one in flight
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class Plan:
    """The evacuation plan."""

    placed: tuple[Slotted, ...]  # in flight first, then guests in start order
    order: tuple[str, ...]  # keys of the planned guests in start order
    blocked: tuple[str, ...]  # keys left out: they would not finish by themselves
    total: Spread  # until every placed job has ended
    band_method: str

    @property
    def empties(self) -> bool:
        """True when nothing was left out, so the host is empty at ``total``."""
        return not self.blocked


@dataclass(frozen=True, slots=True)
class BandConfig:
    """How the total's band is drawn (see the module docstring)."""

    # 1000 draws: the 10th/90th percentile's sampling error is ~0.05 of the total's spread.
    draws: int = 1000
    correlation: float = 0.5  # the common share of guests' errors (copula factor), 0..1
    guest_coverage: float = 0.95  # what each guest's band is read as (measured: 96 %)
    total_coverage: float = 0.8  # what the total's band covers

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise ValueError("draws must be at least 1")
        if not 0.0 <= self.correlation <= 1.0:
            raise ValueError("correlation must be within 0..1")
        for name in ("guest_coverage", "total_coverage"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be within (0, 1)")

    def describe(self) -> str:
        return (
            f"{self.draws} seeded draws of every duration (each guest's band read as its"
            f" {_pct((1 - self.guest_coverage) / 2)}-{_pct((1 + self.guest_coverage) / 2)}"
            f" percentile range, errors sharing a common factor of {self.correlation:g}),"
            f" each scheduled in the planned order; the band is the draws'"
            f" {_pct((1 - self.total_coverage) / 2)}-{_pct((1 + self.total_coverage) / 2)}"
            " percentile range of the total"
        )


#: The band used when none is given (frozen, so one shared value is safe).
DEFAULT_BAND = BandConfig()


def _pct(q: float) -> str:
    """A quantile as a percentile: 0.025 -> "2.5th", 0.9 -> "90th"."""
    return f"{q * 100:.1f}".rstrip("0").rstrip(".") + "th"


def shared_bandwidth(per_migration_bps: int, link_bps: int | None, concurrency: int) -> int:
    """The bandwidth one migration gets when ``concurrency`` of them share one link.

    Assumption: the link is split evenly and every slot is busy, so each migration gets at
    most ``link_bps / concurrency`` (and never more than its own limit). This is pessimistic
    for the drain's tail, when fewer migrations than slots remain and each could run
    faster. ``link_bps=None`` means the migrations do not share a bottleneck: each keeps its
    own limit.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if link_bps is None:
        return per_migration_bps
    return max(1, min(per_migration_bps, link_bps // concurrency))


def post_copy_spread(
    memory_bytes: float, hot_set_bytes: float | None, bandwidth_bps: float
) -> Spread:
    """The duration of a migration that is switched to post-copy because it would not converge.

    nova's ``live_migration_permit_post_copy`` switches once pre-copy stops making progress,
    in practice after the first full pass: pass 1 sends all of RAM (``memory / bandwidth``),
    then post-copy sends the pages dirtied meanwhile once (at most the hot set). The low edge
    assumes the switch came at once (every page goes once), the central and high edges that
    it came after pass 1 with the whole hot set re-dirtied.
    """
    if bandwidth_bps <= 0:
        raise ValueError("bandwidth must be positive")
    once = memory_bytes / bandwidth_bps
    after_pass1 = once + max(hot_set_bytes or memory_bytes, 0.0) / bandwidth_bps
    return Spread(central=after_pass1, low=once, high=after_pass1)


def lpt_order(jobs: Sequence[Job]) -> list[Job]:
    """The guests that can be planned, longest first (ties by name)."""
    plannable = [j for j in jobs if j.spread is not None and not j.in_flight]
    return sorted(plannable, key=lambda j: (-_central(j), j.name, j.key))


def _central(job: Job) -> float:
    assert job.spread is not None
    return job.spread.central


def schedule(
    durations: Sequence[float], concurrency: int, in_flight: Sequence[float] = ()
) -> tuple[list[float], float]:
    """List scheduling: start times of ``durations`` (in this order) and the makespan.

    ``in_flight`` are the times left of migrations already running; they hold slots from 0.
    Invariant: at any time at most ``max(concurrency, len(in_flight))`` migrations run, and
    a queued guest starts as soon as fewer than ``concurrency`` do.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    running = list(in_flight)
    heapq.heapify(running)
    clock = 0.0
    starts: list[float] = []
    for d in durations:
        while len(running) >= concurrency:
            clock = max(clock, heapq.heappop(running))
        starts.append(clock)
        heapq.heappush(running, clock + d)
    # Every popped end is <= clock <= the end pushed after it, so the heap holds the latest.
    return starts, float(max(running, default=0.0))


def _sample(spread: Spread, z: float, z_edge: float) -> float:
    """The duration at normal score ``z`` of the two-piece normal through the spread."""
    if z >= 0:
        if math.isinf(spread.high):
            return math.inf if z > 0 else spread.central
        return spread.central + z * (spread.high - spread.central) / z_edge
    return max(0.0, spread.central + z * (spread.central - spread.low) / z_edge)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    a, b = sorted_values[lo], sorted_values[hi]
    if math.isinf(a) or math.isinf(b):
        return b if pos > lo else a
    return a + (b - a) * (pos - lo)


def total_band(
    guests: Sequence[Spread],
    in_flight: Sequence[Spread],
    concurrency: int,
    rng: random.Random,
    config: BandConfig = DEFAULT_BAND,
) -> tuple[float, float]:
    """(low, high) of the makespan when the durations are uncertain (module docstring)."""
    z_edge = _NORMAL.inv_cdf((1 + config.guest_coverage) / 2)
    rho = config.correlation
    common_w, own_w = math.sqrt(rho), math.sqrt(1.0 - rho)
    spreads = list(in_flight) + list(guests)
    n_flight = len(in_flight)
    totals: list[float] = []
    for _ in range(config.draws):
        common = _normal(rng)
        drawn = [_sample(s, common_w * common + own_w * _normal(rng), z_edge) for s in spreads]
        totals.append(schedule(drawn[n_flight:], concurrency, drawn[:n_flight])[1])
    totals.sort()
    tail = (1 - config.total_coverage) / 2
    return _quantile(totals, tail), _quantile(totals, 1 - tail)


def _normal(rng: random.Random) -> float:
    # inv_cdf needs 0 < u < 1; random() may return 0.0.
    u = rng.random()
    return _NORMAL.inv_cdf(u if u > 0.0 else 1e-12)


def plan_evacuation(
    jobs: Sequence[Job],
    concurrency: int,
    rng: random.Random,
    *,
    order_given: bool = False,
    band: BandConfig = DEFAULT_BAND,
) -> Plan:
    """The plan that empties the host: who starts when, the total and its band.

    Args:
        jobs: the guests to move (in the caller's order when ``order_given``) and the
            migrations in flight (``in_flight=True``, spread = live ETA).
        concurrency: migrations at a time, at least 1.
        rng: seeded, for the band's draws; the same seed gives the same band.
        order_given: keep the guests' order as given instead of longest first.
        band: how the band is drawn.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    flying = [j for j in jobs if j.in_flight and j.spread is not None]
    if order_given:
        ordered = [j for j in jobs if not j.in_flight and j.spread is not None]
    else:
        ordered = lpt_order(jobs)
    blocked = tuple(j.key for j in jobs if j.spread is None)
    flight_spreads = [j.spread for j in flying if j.spread is not None]
    guest_spreads = [j.spread for j in ordered if j.spread is not None]
    starts, central = schedule(
        [s.central for s in guest_spreads], concurrency, [s.central for s in flight_spreads]
    )
    placed = [
        Slotted(j.key, 0, 0.0, s.central) for j, s in zip(flying, flight_spreads, strict=True)
    ]
    placed += [
        Slotted(j.key, i + 1, start, start + s.central)
        for i, (j, s, start) in enumerate(zip(ordered, guest_spreads, starts, strict=True))
    ]
    if flight_spreads or guest_spreads:
        low, high = total_band(guest_spreads, flight_spreads, concurrency, rng, band)
    else:
        low = high = 0.0
    return Plan(
        placed=tuple(placed),
        order=tuple(j.key for j in ordered),
        blocked=blocked,
        total=Spread(central=central, low=min(low, central), high=max(high, central)),
        band_method=band.describe(),
    )
