"""Pre-flight dirty-rate measurements of idle guests (issue 6), in the background.

Every idle running guest is measured about once per ``interval_s`` with QEMU's page
sampling over a ladder of periods, at most ``concurrency`` guests at a time, the
longest-unmeasured first. A measurement is kept only if the guest stayed idle throughout,
and only for the instance of the guest (libvirt domain id) it was taken on: a guest
restarted under the same UUID is a new workload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import libvirt
from migwatch.agent.backends.jobstats import no_job
from migwatch.agent.backends.libvirt.scan import idle_domains
from migwatch.agent.model import Preflight

log = logging.getLogger(__name__)

_NEVER = Preflight(measured_at=float("-inf"))
#: Page sampling finishes shortly after its period; then its result is polled this long.
_RESULT_WAIT_S = 3.0


class JobRunning(Exception):
    """The guest has a job: no measurement may start on it (and a scan should look)."""


class Measured(NamedTuple):
    """A guest's latest measurement and the domain id it was taken on."""

    domain_id: int
    preflight: Preflight


class PreflightSampler:
    """The measurements of one host's guests and the loop that takes them."""

    def __init__(
        self,
        *,
        interval_s: float,
        periods: tuple[int, ...],
        concurrency: int,
        busy: Callable[[], set[str]],
        clock: Callable[[], float],
        job_seen: Callable[[], None] = lambda: None,
    ) -> None:
        self.interval_s = interval_s
        self._periods = tuple(periods)
        self._concurrency = max(1, concurrency)
        self._busy = busy  # UUIDs of guests with a migration job: never measured
        # Called when a guest about to be measured turns out to have a job the agent has not
        # found yet (a migration just began): the backend scans at once.
        self._job_seen = job_seen
        self._clock = clock
        self._measured: dict[str, Measured] = {}
        # Starting a measurement while a migration job runs blocks until the job ends
        # (NOTES.md): give those calls their own thread, so a blocked one can never
        # starve job sampling of workers.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dirtyrate")

    def of(self, uuid: str, domain_id: int | None = -1) -> Preflight | None:
        """The measurement of this guest; with ``domain_id``, only if taken on that
        instance of it (``None``: the guest is not running)."""
        entry = self._measured.get(uuid)
        if entry is None or domain_id is None or (domain_id not in (-1, entry.domain_id)):
            return None
        return entry.preflight

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, conn: Any, connected: Callable[[], bool]) -> None:
        """Measure until cancelled or until ``connected()`` turns False."""
        while connected():
            idle = await asyncio.to_thread(idle_domains, conn)  # uuid -> domain id
            busy = self._busy()
            for known in set(self._measured) - busy:
                if self.of(known, idle.get(known)) is None:
                    del self._measured[known]  # the guest left, stopped or restarted
            now = self._clock()
            age = {uuid: now - (self.of(uuid) or _NEVER).measured_at for uuid in idle}
            due = sorted(
                (uuid for uuid in idle if uuid not in busy and age[uuid] >= self.interval_s),
                key=lambda uuid: -age[uuid],
            )
            if not due:
                await asyncio.sleep(min(self.interval_s, 10.0))
                continue
            batch = due[: self._concurrency]
            await asyncio.gather(*(self._measure_guest(conn, uuid, idle[uuid]) for uuid in batch))
            # Spread the guests over the interval rather than measuring in bursts.
            await asyncio.sleep(self.interval_s / max(1, len(idle)) / 4)

    async def _measure_guest(self, conn: Any, uuid: str, domain_id: int) -> None:
        """The period ladder on one guest; kept only if it stayed idle throughout."""
        rates: dict[float, float] = {}
        for period in self._periods:
            if uuid in self._busy():
                break  # never start one on a guest with a job
            mbps = await self._measure(conn, uuid, period)
            if mbps is None or uuid in self._busy():
                break  # failed, or a migration began while it ran: not an idle reading
            rates[float(period)] = mbps
        if rates:
            self._measured[uuid] = Measured(
                domain_id, Preflight(measured_at=self._clock(), rates=rates)
            )
            log.debug("pre-flight dirty rate of %s: %s MiB/s", uuid, rates)

    async def _measure(self, conn: Any, uuid: str, period: int) -> float | None:
        """One page-sampling measurement over ``period`` s, in MiB/s; ``None`` if it could
        not be made. QEMU measures on its own: the wait is on the event loop, and the
        pre-flight thread is held only for the start and the reads."""
        loop = asyncio.get_running_loop()
        try:
            try:
                previous = await loop.run_in_executor(self._pool, _start, conn, uuid, period)
            except JobRunning:
                self._job_seen()
                return None
            await asyncio.sleep(period + 0.3)
            deadline = loop.time() + _RESULT_WAIT_S
            while True:
                mbps = await loop.run_in_executor(self._pool, _result, conn, uuid, previous)
                if mbps is not None or loop.time() > deadline:
                    return mbps
                await asyncio.sleep(0.2)
        except libvirt.libvirtError as exc:
            log.debug("dirty-rate measurement of %s failed: %s", uuid, exc.get_error_message())
            return None


# -- blocking (run on the pre-flight thread) ------------------------------------------------
def _start(conn: Any, uuid: str, period: int) -> Any:
    """Start one page-sampling measurement; returns the previous result's start time, which
    tells the new result from the old one. Never the dirty-bitmap mode: on QEMU 7.2 under
    TCG it killed the guest (NOTES.md)."""
    dom = conn.lookupByUUIDString(uuid)
    # Starting one while a migration job runs blocks until the job ends (NOTES.md): look
    # first, in the same call, so the window for that is the few ms between the two calls.
    if not no_job(dom.jobStats()):
        raise JobRunning(uuid)
    previous_start = _stats(conn, dom).get("dirtyrate.calc_start_time")
    dom.startDirtyRateCalc(int(period), libvirt.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING)
    return previous_start


def _result(conn: Any, uuid: str, previous_start: Any) -> float | None:
    """The measurement's MiB/s once QEMU has it; ``None`` while it is still running."""
    current = _stats(conn, conn.lookupByUUIDString(uuid))
    fresh = current.get("dirtyrate.calc_start_time") != previous_start
    if fresh and int(current.get("dirtyrate.calc_status", 0)) == 2:  # measured
        return float(current.get("dirtyrate.megabytes_per_second", 0))
    return None


def _stats(conn: Any, dom: Any) -> dict[str, Any]:
    ((_, found),) = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE, 0)
    return dict(found)
