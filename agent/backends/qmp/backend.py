"""The QMP backend's I/O edge: each guest's QMP socket, through qemu.qmp.

One socket per guest (``--qmp-sockets``, default Proxmox's ``/var/run/qemu-server/*.qmp``),
the guest's id from the file name. Every visit is one short session (``session``: never
monopolise the monitor); a busy socket is skipped rather than waited for.

What is polled: ``query-status`` and ``query-migrate`` every ``scan_interval_s`` for an
idle guest and every ``sample_interval_s`` during a migration, then also the migration
parameters and capabilities (the limits in force, and whether post-copy and auto-converge
are on). The pure ``GuestWatcher`` decides what that means. Sockets that appear or
vanish are picked up or dropped at each scan; a socket that refuses connections (QEMU
died and left the file) is gone.

This module is the scan and the ``Backend`` the agent sees. The package's other modules:
``sockets`` (which sockets, the QEMU process behind each), ``session`` (one session on a
monitor), ``publish`` (observations out, the trace), ``controls`` (abort, force-complete,
limits), ``preflight`` (idle guests' dirty rates); ``watcher`` and ``jobs`` are pure. Only
this module, ``session``, ``controls`` and ``preflight`` import qemu.qmp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from migwatch.agent.backends.learned import HostLearning
from migwatch.agent.backends.protocol import Ending, ObservationSink, StatusSink
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.errors import BackendUnavailable, MigrationGone
from migwatch.agent.model import Direction, DomainFacts, HostState, Phase
from qemu.qmp import ExecuteError, QMPClient, QMPError

from .controls import Controls
from .jobs import (
    BALLOON_PATH,
    RUNNING,
    capabilities_of,
    disk_bytes,
    free_memory_of,
    limits_of,
    mirror_of,
    status_of,
)
from .preflight import DirtyRateSampler
from .publish import Publisher
from .session import Busy, Gone, Sessions, Socket
from .sockets import DEDICATED_SUFFIX, find_sockets, resident_bytes, vmid_of
from .watcher import Guest, GuestWatcher, Poll

log = logging.getLogger(__name__)


class QmpBackend:
    """Watches every QEMU whose QMP socket matches ``pattern``."""

    def __init__(
        self,
        pattern: str,
        *,
        sample_interval_s: float = 0.5,
        scan_interval_s: float = 2.0,
        host_name: str = "",
        recorder: TraceRecorder | None = None,
        preflight_interval_s: float = 120.0,
        preflight_periods: tuple[int, ...] = (1, 2, 4, 8, 16),
        preflight_concurrency: int = 4,
        connect_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        state_dir: str = "",
    ) -> None:
        self._pattern = pattern
        self._interval = sample_interval_s
        self._scan_interval = scan_interval_s
        self._host = host_name or socket.gethostname()
        self._preflight_interval = preflight_interval_s
        self._connect_timeout = connect_timeout_s
        self._clock = clock
        self._sockets: dict[Path, Socket] = {}
        self._scanned = False  # every socket of the first scan has been visited once
        # QEMU's own share of rss on this host, learned from completed migrations as the
        # libvirt backend does (and kept across restarts with --state-dir).
        self._learning = HostLearning(state_dir)
        self._publisher = Publisher(
            recorder=recorder,
            sample_interval_s=sample_interval_s,
            completed=lambda obs, stats: self._learning.completed_job(
                obs.info.domain_name, obs.info.resident_bytes, stats
            ),
        )
        self._sessions = Sessions(connect_timeout_s=connect_timeout_s, on_event=self._on_event)
        self._controls = Controls(
            sockets=self._sockets.values,
            sessions=self._sessions,
            publisher=self._publisher,
            host=self._host,
            clock=clock,
        )
        self._preflight = DirtyRateSampler(
            sockets=self._sockets.values,
            sessions=self._sessions,
            interval_s=preflight_interval_s,
            periods=preflight_periods,
            concurrency=preflight_concurrency,
            scan_interval_s=scan_interval_s,
            clock=clock,
        )

    @property
    def name(self) -> str:
        return "qmp"

    @property
    def host(self) -> str:
        return self._host

    async def _execute(
        self, client: QMPClient, command: str, args: Mapping[str, object] | None = None
    ) -> Any:
        return await self._sessions.execute(client, command, args)

    def _on_event(self, sock: Socket, name: str, data: dict[str, Any]) -> None:
        """A dedicated monitor's event: into the trace, then fed to the watcher."""
        watcher = sock.watcher
        if watcher is not None:
            info = watcher.info
            if info is not None:
                self._publisher.event(info.domain_uuid, name, data)
            self._publisher.publish(sock, watcher.event(self._clock(), name, data), None)

    # -- the scan ---------------------------------------------------------------------
    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        self._publisher.attach(observe)
        status(HostState.OK, "")
        sampler = (
            asyncio.create_task(self._preflight.run(), name="qmp-dirtyrate")
            if self._preflight_interval > 0
            else None
        )
        try:
            while True:
                paths = find_sockets(self._pattern)
                for path in sorted(paths - set(self._sockets)):
                    sock = Socket(path, dedicated=path.name.endswith(DEDICATED_SUFFIX))
                    self._sockets[path] = sock
                    sock.task = asyncio.create_task(self._watch(sock), name=f"qmp-{path.name}")
                for path in set(self._sockets) - paths:
                    self._sockets[path].wake.set()  # its task finds it gone
                if not self._scanned:
                    await asyncio.gather(*(self._first_visit(s) for s in self._sockets.values()))
                    self._scanned = True
                await asyncio.sleep(self._scan_interval)
        finally:
            if sampler is not None:
                sampler.cancel()
            for sock in self._sockets.values():
                if sock.task is not None:
                    sock.task.cancel()
            await asyncio.gather(
                *(s.task for s in self._sockets.values() if s.task is not None),
                return_exceptions=True,
            )

    async def _first_visit(self, sock: Socket) -> None:
        deadline = time.monotonic() + 3 * self._connect_timeout
        while sock.watcher is None and sock.path in self._sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _watch(self, sock: Socket) -> None:
        """Visit one socket until it is gone."""
        publish = self._publisher.publish
        try:
            while True:
                try:
                    poll = await self._visit(sock)
                except Gone as exc:
                    log.info("QMP socket %s is gone (%s)", sock.path, exc)
                    if sock.watcher is not None:
                        publish(sock, sock.watcher.gone(self._clock()), None)
                    return
                except Busy as exc:
                    log.debug("QMP socket %s skipped: %s", sock.path, exc)
                    poll = None
                except QMPError as exc:
                    log.warning("QMP socket %s: %s", sock.path, exc)
                    poll = None
                watcher = sock.watcher
                if poll is not None and watcher is not None:
                    publish(sock, watcher.poll(self._clock(), poll), poll)
                busy = watcher is not None and (
                    watcher.role is not None or watcher.status in RUNNING
                )
                sock.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        sock.wake.wait(), self._interval if busy else self._scan_interval
                    )
                if not sock.path.exists():
                    raise Gone("the socket file was removed")
        except Gone:
            if sock.watcher is not None:
                publish(sock, sock.watcher.gone(self._clock()), None)
        finally:
            self._sockets.pop(sock.path, None)
            await self._sessions.release(sock)

    async def _visit(self, sock: Socket) -> Poll:
        """One batch: identify the guest once, then its state and migration."""
        began = time.monotonic()
        async with self._sessions.session(sock) as qmp:
            if sock.watcher is None:
                sock.watcher = GuestWatcher(await self._identify(qmp, sock.path), self._host)
            runstate = (await self._execute(qmp, "query-status")).get("status", "")
            migrate = await self._execute(qmp, "query-migrate")
            # Proxmox copies local disks with drive-mirror before `migrate`: the block jobs
            # are part of the migration (``jobs.mirror_of``); the nodes only when there are.
            mirror = None
            block_jobs = await self._execute(qmp, "query-block-jobs")
            if block_jobs:
                nodes = await self._execute(qmp, "query-named-block-nodes", {"flat": True})
                mirror = mirror_of(block_jobs, nodes)
            limits = None
            if (
                status_of(migrate) in RUNNING
                or sock.watcher.role is Direction.OUTGOING
                or mirror is not None
            ):
                params = await self._execute(qmp, "query-migrate-parameters")
                caps = capabilities_of(await self._execute(qmp, "query-migrate-capabilities"))
                limits = limits_of(params, caps)
            elif sock.dedicated and not sock.events_on and runstate != "inmigrate":
                # QEMU sends MIGRATION and MIGRATION_PASS only with the `events` capability,
                # which can change only between migrations; libvirt turns it on too.
                with contextlib.suppress(ExecuteError):
                    await self._execute(
                        qmp,
                        "migrate-set-capabilities",
                        {"capabilities": [{"capability": "events", "state": True}]},
                    )
                sock.events_on = True
            # A migration found now: what the guest's memory was as it began.
            found = sock.watcher.role is None and (
                status_of(migrate) in RUNNING or (mirror is not None and not mirror.ready)
            )
            free = await self._balloon_free(qmp) if found else None
        sock.call_ms = (time.monotonic() - began) * 1000
        resident = resident_bytes(sock.pid) if found else None
        return Poll(
            runstate=str(runstate),
            migrate=dict(migrate),
            limits=limits,
            resident_bytes=resident,
            free_bytes=free,
            mirror=mirror,
            resident_overhead_bytes=self._learning.overhead.value(),
        )

    async def _balloon_free(self, qmp: QMPClient) -> int | None:
        """The guest's free memory from its balloon's statistics, as Proxmox reads them;
        None without a balloon, a guest driver or a polling interval."""
        try:
            reply = await self._execute(
                qmp, "qom-get", {"path": BALLOON_PATH, "property": "guest-stats"}
            )
        except ExecuteError:
            return None
        return free_memory_of(reply)

    async def _identify(self, qmp: QMPClient, path: Path) -> Guest:
        vmid = vmid_of(path)
        uuid = (await self._execute(qmp, "query-uuid")).get("UUID", "")
        name = (await self._execute(qmp, "query-name")).get("name", "") or vmid
        memory = None
        with contextlib.suppress(ExecuteError):
            memory = (await self._execute(qmp, "query-memory-size-summary")).get("base-memory")
        if not uuid or uuid == "00000000-0000-0000-0000-000000000000":
            uuid = vmid  # QEMU without -uuid: the file name is all there is
        log.info("QMP guest %s (%s, %s) at %s", name, vmid, uuid, path)
        return Guest(
            vmid=vmid,
            uuid=str(uuid),
            name=str(name),
            memory_bytes=int(memory) if isinstance(memory, int) else None,
        )

    # -- controls -----------------------------------------------------------------------
    async def abort(self, domain_uuid: str) -> None:
        await self._controls.abort(domain_uuid)

    async def force_complete(self, domain_uuid: str) -> bool:
        return await self._controls.force_complete(domain_uuid)

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        await self._controls.update_limits(domain_uuid, max_downtime_s, max_bandwidth_bps)

    # -- after a restart, and predictions -----------------------------------------------
    def _by_uuid(self, domain: str) -> Socket | None:
        for sock in self._sockets.values():
            w = sock.watcher
            if w is not None and domain in (w.guest.uuid, w.guest.name, w.guest.vmid):
                return sock
        return None

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending | None:
        if not self._scanned:
            raise BackendUnavailable("the QMP sockets have not all been visited yet")
        sock = self._by_uuid(domain_uuid)
        if sock is None:
            if direction is Direction.INCOMING:
                return Ending(
                    Phase.FAILED, "the destination QEMU is gone: the migration did not complete"
                )
            # Proxmox stops the source only after the destination runs (libvirt: a
            # transient source domain vanishes after success).
            return Ending(Phase.COMPLETED)
        assert sock.watcher is not None
        return sock.watcher.outcome(direction)

    async def guests(self) -> tuple[str, ...]:
        if not self._scanned:
            raise BackendUnavailable("the QMP sockets have not all been visited yet")
        # An incoming end (``inmigrate``) is a guest arriving, not one to move away.
        return tuple(
            sock.watcher.guest.uuid
            for sock in self._sockets.values()
            if sock.watcher is not None
            and sock.watcher.role is not Direction.INCOMING
            and sock.watcher.runstate not in ("inmigrate", "postmigrate", "")
        )

    async def describe(self, domain: str) -> DomainFacts:
        if not self._scanned:
            raise BackendUnavailable("the QMP sockets have not all been visited yet; retry")
        sock = self._by_uuid(domain)
        if sock is None or sock.watcher is None:
            raise MigrationGone(f"no running QEMU guest {domain!r} on {self._host}")
        try:
            async with self._sessions.session(sock) as qmp:
                params = await self._execute(qmp, "query-migrate-parameters")
                caps = capabilities_of(await self._execute(qmp, "query-migrate-capabilities"))
                blocks = await self._execute(qmp, "query-block")
                free = await self._balloon_free(qmp)
        except Gone as exc:
            raise MigrationGone(f"the QEMU of {domain} is gone") from exc
        except (Busy, QMPError) as exc:
            raise BackendUnavailable(f"the monitor of {domain} is busy ({exc}); retry") from exc
        guest = sock.watcher.guest
        return DomainFacts(
            domain_uuid=guest.uuid,
            domain_name=guest.name,
            memory_bytes=guest.memory_bytes or 0,
            disk_bytes=disk_bytes(blocks),
            limits=limits_of(params, caps),
            preflight=sock.watcher.preflight,
            migrating=sock.watcher.role is not None,
            resident_bytes=resident_bytes(sock.pid),
            free_bytes=free,
            resident_overhead_bytes=self._learning.overhead.value(),
        )

    async def close(self) -> None:
        self._publisher.close()
        self._sockets.clear()
