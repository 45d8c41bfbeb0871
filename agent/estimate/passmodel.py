"""Pure pre-copy pass arithmetic (QEMU 7.2): how long the passes still to come take.

How pre-copy works (what ``plan_passes`` follows)
-------------------------------------------------
* Pass 1 sends all of RAM, walking it in address order. ``memory_remaining`` starts at
  ``memory_total`` and falls by every page walked; ``memory_processed`` grows by the bytes
  actually sent. A never-written (zero) page costs a flag of a few bytes instead of 4 KiB,
  so over zero pages ``memory_remaining`` falls much faster than the bandwidth: the walked
  bytes minus the sent bytes are the zero pages seen so far (the job stats'
  ``memory_constant`` x page size, to within the page headers).
* Pages dirtied during a pass are found only when QEMU syncs the dirty bitmap, which it does
  when what is pending drops below ``threshold = bandwidth x max_downtime`` (checked after
  every rate-limited burst, ``BUFFER_DELAY`` = 100 ms). The sync ends the pass
  (``memory_iteration`` +1) and adds every page dirtied since the previous sync. If the
  total is still >= threshold a new pass starts; otherwise QEMU stops the guest and sends
  the rest unthrottled (the downtime: 12-39 ms in the lab). So a pass ends with a leftover
  ``L`` just under the threshold, on average ``threshold - bandwidth x 50 ms``.
* The bytes a pass adds are the *distinct* pages written during it: ``min(R x t, H)`` for a
  guest writing ``R`` B/s over a hot set of ``H`` bytes during a pass of ``t`` seconds.
* Hence, with ``e`` the excess of a pass over ``L``: each pass takes ``e / bandwidth`` and
  leaves ``e' = min(R x e / bandwidth, H)``: a geometric fall by ``rho = R / bandwidth``
  until ``e`` is below ``threshold - L``; never when ``rho >= 1``.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

#: The most a drain factor may be: 95 % of what is left in pass 1 never written.
MAX_DRAIN = 20.0


@dataclass(frozen=True, slots=True)
class PassPlan:
    """What the pass model says is left: time and bytes until switch-over."""

    converges: bool
    time_s: float  # until the switch-over (math.inf when it never comes)
    bytes: float  # still to send, re-sends and the final stop-and-copy included
    passes: int  # pass boundaries still to come (not counting the current pass)
    throttle: float | None = None  # auto-converge: the guest's CPU throttle at switch-over


NEVER = PassPlan(False, math.inf, math.inf, 0)


@dataclass(frozen=True, slots=True)
class AutoConverge:
    """QEMU's auto-converge (7.2, ``migration_trigger_throttle``), as the pass model follows it.

    At a bitmap sync at least a second after the previous check, if the period dirtied more
    than ``trigger`` of what it sent, a counter goes up; every ``every``-th time the guest's
    vCPUs are throttled: to ``initial`` at first, then ``increment`` more, up to ``maximum``.
    Defaults are QEMU's (libvirt's ``auto_converge.initial``/``increment`` change the first
    two, but the job stats do not say).

    How much a throttle slows the guest's dirtying depends on the guest. QEMU assumes it
    dirties ``1 - throttle`` as fast (``proportional``): true of a CPU-bound writer. A writer
    that needs little CPU is not slowed until the throttle leaves it less than it needs: in
    the lab a paced writer (55-110 MiB/s under TCG) dirtied unchanged through 80 % and
    collapsed at 90 % (ac-fast, ac-close); real programs under TCG behave the same way with
    their own bite points: coreutils sort and zstd dirtied unchanged up to 50-60 % and
    collapsed at 60-70 %, stress-ng only at 99 %. Nothing in the job stats tells where the
    bite is before it happens (a pass capped by the hot set reads the same either way), only
    that it is above the throttle already in force if the readings have not fallen. So the
    dirtying holds until ``bite`` (``None``: ``maximum``) and falls as ``1 - throttle`` from
    there; the band's slow edge puts the bite at the top of the ladder, its fast edge at the
    throttle now (proportional), and the central plan halfway up what is left of the
    ladder: the median of a bite point equally likely anywhere in it.
    """

    throttle: float  # the throttle in force now, 0-0.99 (job stats' auto_converge_throttle)
    proportional: bool = False  # dirtying falls as 1 - throttle (else: only from ``bite``)
    bite: float | None = None  # the throttle from which dirtying falls (None: ``maximum``)
    high: int = 0  # QEMU's count of qualifying syncs since its last step (0 to every - 1)
    # The throttle under which the dirty rate was measured (the last pass may have run
    # under the step before this one); None: ``throttle``.
    measured_at: float | None = None
    initial: float = 0.20
    increment: float = 0.10
    maximum: float = 0.99
    trigger: float = 0.50
    every: int = 2

    def step(self, throttle: float) -> float:
        return self.initial if throttle <= 0 else min(throttle + self.increment, self.maximum)

    def mid_ladder(self) -> AutoConverge:
        """The central plan's bite: halfway between the throttle in force (or the one the
        readings were taken under, if higher: they showed no bite yet) and the top."""
        now = max(self.throttle, self.measured_at or 0.0)
        return replace(self, bite=(now + self.maximum) / 2.0)


def plan_passes(
    *,
    pass_left_bytes: float,
    pass_elapsed_s: float,
    bandwidth_bps: float,
    dirty_rate_bps: float,
    hot_set_bytes: float | None,
    max_downtime_s: float,
    drain_factor: float = 1.0,
    check_interval_s: float = 0.1,
    horizon_s: float = math.inf,
    max_passes: int = 1_000_000,
    auto_converge: AutoConverge | None = None,
    pass_cap: int | None = None,
    pass_cap_rho: float = 0.0,
) -> PassPlan:
    """Simulate the remaining pre-copy passes (see the module docstring).

    Args:
        pass_left_bytes: ``memory_remaining`` now, in the current pass.
        pass_elapsed_s: how long the current pass has run (its dirtying counts already).
        drain_factor: how much faster than the bandwidth ``memory_remaining`` falls in
            this pass (zero pages in pass 1; 1.0 otherwise): ``pass_left / normal bytes``.
        hot_set_bytes: cap on the distinct bytes one pass can dirty (``None``: no cap).
        auto_converge: QEMU is throttling the guest (``dirty_rate_bps`` is its rate at the
            throttle in force now): the passes are then followed one by one.
        pass_cap: at most this many more passes of the geometric fall are counted, the
            switch-over assumed after them (``None``: as many as the arithmetic says), when
            the fall per pass is at least ``pass_cap_rho`` (there the tail's length swings
            with every percent of the dirty rate).
    """
    if bandwidth_bps <= 0:
        return NEVER
    if auto_converge is not None:
        return _plan_throttled(
            pass_left_bytes=pass_left_bytes,
            pass_elapsed_s=pass_elapsed_s,
            bandwidth_bps=bandwidth_bps,
            dirty_rate_bps=dirty_rate_bps,
            hot_set_bytes=hot_set_bytes,
            max_downtime_s=max_downtime_s,
            drain_factor=drain_factor,
            check_interval_s=check_interval_s,
            horizon_s=horizon_s,
            ac=auto_converge,
        )
    threshold = bandwidth_bps * max_downtime_s
    leftover = max(0.0, threshold - bandwidth_bps * check_interval_s / 2.0)
    enough = threshold - leftover  # a pass adding less than this ends pre-copy
    cap = math.inf if hot_set_bytes is None else max(hot_set_bytes, 0.0)
    rate = max(dirty_rate_bps, 0.0)
    drain = min(max(drain_factor, 1.0), MAX_DRAIN)

    # The current pass: send what is above the leftover, zero pages going `drain` x faster.
    above = max(pass_left_bytes - leftover, 0.0)
    time = above / (bandwidth_bps * drain)
    sent = above / drain
    excess = min(rate * (pass_elapsed_s + time), cap)
    rho = rate / bandwidth_bps
    passes = 0
    if excess > 0 and enough <= 0:
        return NEVER  # a zero max downtime never lets QEMU switch over
    # While the hot set caps a pass, step one pass at a time (at most once: after a capped
    # pass e <= cap, so rho x e < cap unless rho >= 1, which never converges anyway).
    while excess >= enough and excess > 0:
        if rho >= 1.0:
            return NEVER
        nxt = rho * excess
        if nxt > cap:
            passes += 1
            time += excess / bandwidth_bps
            sent += excess
            if cap >= excess:
                return NEVER
            excess = cap
            continue
        # Geometric from here: e_k = excess x rho^k for the n passes until e_n < enough.
        if rho <= 0.0:
            n = 1
        else:
            n = max(1, math.ceil(math.log(enough / excess) / math.log(rho)))
        if n > max_passes:
            return NEVER
        if pass_cap is not None and rho >= pass_cap_rho:
            n = max(min(n, pass_cap - passes), 1)
        total = excess * (1.0 - rho**n) / (1.0 - rho)
        passes += n
        time += total / bandwidth_bps
        sent += total
        excess = excess * rho**n
        break
    if time > horizon_s:
        return NEVER
    # Switch-over: the leftover and the last pass's dirt go unthrottled while paused.
    return PassPlan(True, time, sent + leftover + excess, passes)


def _plan_throttled(
    *,
    pass_left_bytes: float,
    pass_elapsed_s: float,
    bandwidth_bps: float,
    dirty_rate_bps: float,
    hot_set_bytes: float | None,
    max_downtime_s: float,
    drain_factor: float,
    check_interval_s: float,
    horizon_s: float,
    ac: AutoConverge,
    max_passes: int = 500,
) -> PassPlan:
    """``plan_passes`` under auto-converge: each pass's dirtying at the throttle QEMU will
    have set by then (see ``AutoConverge``), pass by pass; ``NEVER`` if even the maximum
    throttle does not let the passes shrink below the switch-over threshold."""
    threshold = bandwidth_bps * max_downtime_s
    leftover = max(0.0, threshold - bandwidth_bps * check_interval_s / 2.0)
    enough = threshold - leftover
    cap = math.inf if hot_set_bytes is None else max(hot_set_bytes, 0.0)
    throttle = min(max(ac.throttle, 0.0), ac.maximum)
    measured = throttle if ac.measured_at is None else min(max(ac.measured_at, 0.0), ac.maximum)
    unthrottled = max(dirty_rate_bps, 0.0) / max(1.0 - measured, 1e-3)
    drain = min(max(drain_factor, 1.0), MAX_DRAIN)
    above = max(pass_left_bytes - leftover, 0.0)
    duration = above / (bandwidth_bps * drain)
    time, sent = duration, above / drain

    def rate_at(t: float) -> float:
        if ac.proportional or t >= min(ac.bite if ac.bite is not None else 1.0, ac.maximum):
            return unthrottled * (1.0 - t)
        return unthrottled * (1.0 - measured)  # not slowed until the bite

    excess = min(rate_at(throttle) * (pass_elapsed_s + duration), cap)
    if excess > 0 and enough <= 0:
        return NEVER
    # The check period: what the passes since the last check sent and dirtied, and how long
    # they took (QEMU looks at most once a second). The current pass counts whole.
    period_s, period_sent, period_dirty = pass_elapsed_s + duration, sent, excess
    high = max(ac.high, 0)
    passes = 0
    while excess >= enough:
        if passes >= max_passes or time > horizon_s:
            return NEVER
        # The bitmap sync that ends this pass: QEMU's throttle check.
        if period_s >= 1.0:
            if period_dirty > ac.trigger * period_sent:
                high += 1
                if high >= ac.every:
                    high = 0
                    throttle = ac.step(throttle)
            period_s = period_sent = period_dirty = 0.0
        rate = rate_at(throttle)
        duration = excess / bandwidth_bps
        nxt = min(rate * duration, cap)
        if throttle >= ac.maximum and nxt >= excess:
            return NEVER  # the most QEMU will throttle still re-dirties as much as it sends
        passes += 1
        time += duration
        sent += excess
        period_s += duration
        period_sent += excess
        period_dirty += nxt
        excess = nxt
    if time > horizon_s:
        return NEVER
    return PassPlan(True, time, sent + leftover + excess, passes, throttle)


# --- pass 1's never-written pages ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pass1Drain:
    """How fast the rest of pass 1 drains: the central and the optimistic drain factor.

    What the counters show (lab traces, QEMU 7.2, Linux 6.1 guests): zero pages come in
    clusters in address order, not spread evenly. A first cluster (~47 MiB on 0.75-1.1 GiB
    guests: low memory the kernel barely uses) shows in the first second; then the walk
    crosses the guest's used memory and ``memory_constant`` stays flat; the never-written
    top of RAM (consistent with the guest kernel handing out low addresses first) then goes
    in one jump in the last < 0.25 s of pass 1 (converge: 47 -> 182 MiB). Nothing in the
    job stats announces that tail. So the share seen so far is a weak guide to what is
    ahead: the central value still uses it (the neutral assumption: what is ahead is like
    what was walked), and the
    optimistic edge allows the never-written part of the *whole RAM* to reach
    ``never_written_share`` of it, which late in pass 1 can be all of what is left.
    """

    central: float
    optimistic: float
    zero_seen_bytes: float


def pass1_drain(
    *,
    memory_total: float,
    memory_remaining: float,
    memory_processed: float,
    never_written_share: float,
) -> Pass1Drain:
    """Drain factors for the rest of pass 1 from one sample's counters.

    ``memory_total - memory_remaining`` is what pass 1 walked (no bitmap sync has added
    anything yet), ``memory_processed`` what it sent: the difference is the zero pages seen.
    """
    if memory_total <= 0 or memory_remaining <= 0 or memory_processed <= 0:
        return Pass1Drain(1.0, 1.0, 0.0)  # nothing sent yet: nothing seen
    walked = max(memory_total - memory_remaining, 0.0)
    zero_seen = min(max(walked - memory_processed, 0.0), walked)
    share = zero_seen / walked if walked > 0 else 0.0
    central_ahead = share * memory_remaining
    optimistic_ahead = max(never_written_share * memory_total - zero_seen, central_ahead)
    return Pass1Drain(
        central=drain_for(memory_remaining, central_ahead),
        optimistic=drain_for(memory_remaining, optimistic_ahead),
        zero_seen_bytes=zero_seen,
    )


def drain_for(pass_left: float, zero_ahead: float) -> float:
    """The drain factor of a pass with ``zero_ahead`` of its ``pass_left`` bytes zero."""
    if pass_left <= 0:
        return 1.0
    normal = max(pass_left - min(zero_ahead, pass_left), pass_left / MAX_DRAIN)
    if normal <= 0:  # pass_left so small that the floor underflowed: all of it is zero
        return MAX_DRAIN
    return min(max(pass_left / normal, 1.0), MAX_DRAIN)


# --- the never-written share from the source QEMU's resident memory -------------------


@dataclass(frozen=True, slots=True)
class ResidentBound:
    """Never-written (zero) bytes of guest RAM implied by the source QEMU's resident memory.

    Why it works: guest RAM is anonymous memory of the QEMU process, and a page the guest
    never wrote was never faulted in, so it is not in the process's RSS
    (``virDomainMemoryStats`` ``rss``). Pass 1 finds such pages all-zero and sends them as a
    few-byte flag (``memory_constant``). RSS also holds QEMU's own memory (binary, heap,
    TCG's code cache), so ``rss - overhead`` estimates the non-zero bytes, and ``rss`` alone
    bounds them from above. What can make it wrong: pages the guest writes for the first
    time after the reading (sent normally in pass 1, or re-sent later), and resident pages
    whose content is zero (count as non-zero here: errs to the slow side).
    """

    central: float  # memory - (rss - overhead)
    low: float  # memory - rss: overhead 0, the hard bound (slow edge)
    high: float  # memory - (rss - 2 x overhead) (fast edge)
    # The most never-written bytes there can be: the guest's free memory when it reports
    # it (balloon statistics; a never-written page is a free one), else all of RAM. The
    # three values above are capped by it, and so is what a loose rss may leave unwritten.
    ceiling: float = math.inf


def resident_bound(
    memory_bytes: float,
    resident_bytes: float,
    overhead_bytes: float,
    *,
    free_bytes: float | None = None,
) -> ResidentBound:
    ceiling = memory_bytes if free_bytes is None else min(max(free_bytes, 0.0), memory_bytes)

    def zero(overhead: float) -> float:
        return min(max(memory_bytes - max(resident_bytes - overhead, 0.0), 0.0), ceiling)

    o = max(overhead_bytes, 0.0)
    return ResidentBound(central=zero(o), low=zero(0.0), high=zero(2.0 * o), ceiling=ceiling)


def pass1_drains_resident(
    *,
    memory_remaining: float,
    memory_processed: float,
    bound: ResidentBound,
    memory_total: float,
    loose_share: float = 0.0,
    loose_weight: float = 0.0,
) -> tuple[float, float, float]:
    """(central, fast, slow) drain factors for the rest of pass 1 given ``bound``.

    Pass 1 sends each non-zero page once (``memory_processed`` so far, to within headers),
    so the non-zero bytes still ahead are ``(memory - zero) - memory_processed`` and the rest
    of ``memory_remaining`` is zero pages.

    Resident memory is an upper bound of the non-zero bytes, and it can be loose: QEMU backs
    guest RAM with transparent huge pages, so one 4 KiB page the guest touched makes 2 MiB
    resident, and a guest whose programs and kernel touch memory everywhere can be almost
    all resident yet send a third of its RAM as zero pages. Pass 1's own evidence, the zero
    pages it has walked so far (``walked - memory_processed``), speaks against the bound as
    the walk goes on: if what is left is like what was walked, ``remaining x (1 - seen
    share)`` is ahead, and when that is less than the bound says the central value moves
    towards it by the share of RAM walked. It never moves the other way: the lab's guests
    leave their never-written pages at the top of RAM, where a walk sees them last, so a low
    share seen so far says nothing against the bound. The slow edge keeps the bound (rss
    with no overhead: a hard one); the fast edge also allows ``loose_share`` of RAM to be
    never written whatever rss says (an honest band until the walk has spoken).
    """
    walked = max(memory_total - memory_remaining, 0.0)
    processed = max(memory_processed, 0.0)
    seen_share = min(max(walked - processed, 0.0) / walked, 1.0) if walked > 0 else 0.0
    by_walk = memory_remaining * (1.0 - seen_share)  # non-zero ahead if the rest is alike
    w = walked / memory_total if memory_total > 0 else 0.0

    def ahead(zero_total: float) -> float:
        return max(memory_total - zero_total - processed, 0.0)

    def drain(normal_ahead: float) -> float:
        return drain_for(memory_remaining, max(memory_remaining - normal_ahead, 0.0))

    # The never-written bytes if rss is as loose as ``loose_share`` allows.
    loose_zero = min(max(bound.central, loose_share * memory_total), bound.ceiling)
    central = ahead(bound.central + loose_weight * (loose_zero - bound.central))
    if walked > 0 and by_walk < central:
        central = (1.0 - w) * central + w * by_walk
    fast = ahead(bound.high)
    if loose_share > 0:
        fast = min(fast, ahead(loose_zero))
    if walked > 0:
        fast = min(fast, by_walk)
    return drain(central), drain(min(fast, central)), drain(max(ahead(bound.low), central))


def hot_ceiling(memory: float, bound: ResidentBound | None) -> float:
    """The most a hot set can plausibly be: the guest's RAM, or the part of it ever written
    when resident memory tells it (a guest rewrites what it has written)."""
    return memory if bound is None else max(memory - bound.central, 0.0)
