"""Pre-flight dirty-rate measurements of idle QEMU guests (issue 6), in the background.

Every idle running guest is measured about once per ``interval_s`` with QEMU's
``calc-dirty-rate`` in page-sampling mode over a ladder of periods, at most
``concurrency`` guests at a time, never while it migrates. The monitor is held only to
start a measurement and to read its result, never for the period itself. A ladder is kept
(on the guest's watcher, as its ``Preflight``) only with the readings taken while the
guest stayed idle.

Apart from the scan (``backend``) because it has its own loop and pace (minutes, not
seconds), and shares with the scan only the sockets and their sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from migwatch.agent.model import Preflight
from qemu.qmp import QMPError

from .jobs import RUNNING, dirty_rate_of, status_of
from .session import Busy, Gone, Sessions, Socket

log = logging.getLogger(__name__)

# Pages hashed per GiB of guest RAM by one page-sampling measurement. QEMU's default (512;
# libvirt cannot change it) leaves 128 pages of a 256 MiB guest: in the bare-QEMU lab single
# readings were off by 2x. 4096 is QEMU's maximum; hashing them costs the guest nothing
# noticeable (a 4 KiB CRC per page, twice per measurement).
_SAMPLE_PAGES_PER_GIB = 4096


class DirtyRateSampler:
    """The loop that measures the idle guests of one host, a few at a time."""

    def __init__(
        self,
        *,
        sockets: Callable[[], Iterable[Socket]],
        sessions: Sessions,
        interval_s: float,
        periods: tuple[int, ...],
        concurrency: int,
        scan_interval_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._sockets = sockets
        self._sessions = sessions
        self._interval = interval_s
        self._periods = tuple(periods)
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._scan_interval = scan_interval_s
        self._clock = clock

    async def run(self) -> None:
        """Measure each idle running guest about once per ``interval_s``, never while it
        migrates; the monitor is held only to start and to read each one."""
        running: set[asyncio.Task[None]] = set()
        while True:
            now = time.monotonic()
            for sock in list(self._sockets()):
                w = sock.watcher
                if (
                    w is None
                    or not w.idle
                    or now - sock.preflight_at < self._interval
                    or any(t.get_name() == str(sock.path) for t in running)
                ):
                    continue
                sock.preflight_at = now
                task = asyncio.create_task(self._measure_guest(sock), name=str(sock.path))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(min(self._scan_interval, self._interval))

    async def _measure_guest(self, sock: Socket) -> None:
        async with self._slots:
            rates: dict[float, float] = {}
            for period in self._periods:
                w = sock.watcher
                if w is None or not w.idle:
                    break
                try:
                    mbps = await self._measure_dirty_rate(sock, period)
                except (Gone, Busy, QMPError, TimeoutError) as exc:
                    log.debug("dirty-rate measurement of %s failed: %s", sock.path, exc)
                    break
                if mbps is None or not w.idle:
                    break  # failed, or a migration began meanwhile: not an idle reading
                rates[float(period)] = mbps
            if rates and sock.watcher is not None:
                sock.watcher.preflight = Preflight(measured_at=self._clock(), rates=rates)
                log.debug("pre-flight dirty rate of %s: %s MiB/s", sock.path, rates)
            sock.preflight_at = time.monotonic()

    async def _measure_dirty_rate(self, sock: Socket, period: int) -> float | None:
        """One page-sampling measurement (never dirty-bitmap: on QEMU 7.2 under TCG it
        killed the guest, NOTES.md); None if a migration started or no result came."""
        execute = self._sessions.execute
        async with self._sessions.session(sock) as qmp:
            if status_of(await execute(qmp, "query-migrate")) in RUNNING:
                return None
            previous = (await execute(qmp, "query-dirty-rate")).get("start-time")
            await execute(
                qmp,
                "calc-dirty-rate",
                {
                    "calc-time": int(period),
                    "mode": "page-sampling",
                    "sample-pages": _SAMPLE_PAGES_PER_GIB,
                },
            )
        await asyncio.sleep(period + 0.3)
        deadline = time.monotonic() + 3.0
        while True:
            async with self._sessions.session(sock) as qmp:
                reply = await execute(qmp, "query-dirty-rate")
            mbps = dirty_rate_of(reply, previous if isinstance(previous, int) else None)
            if mbps is not None or time.monotonic() > deadline:
                return mbps
            await asyncio.sleep(0.2)
