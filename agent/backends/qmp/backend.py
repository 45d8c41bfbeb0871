"""The QMP backend's I/O edge: each guest's QMP socket, through qemu.qmp.

The only module that imports qemu.qmp. One socket per guest (``--qmp-sockets``, default
Proxmox's ``/var/run/qemu-server/*.qmp``), the guest's id from the file name.

**Never monopolise the monitor.** QEMU serves one client per QMP socket at a time, and
the management stack (Proxmox's ``qm`` and its migration task) needs it. So every visit
is one short session: connect, a batch of commands, disconnect; a busy socket (another
client connected) is skipped after ``connect_timeout_s`` rather than waited for. Another
client queued behind a batch waits for the batch only: milliseconds.

What is polled: ``query-status`` and ``query-migrate`` every ``scan_interval_s`` for an
idle guest and every ``sample_interval_s`` during a migration, then also the migration
parameters and capabilities (the limits in force, and whether post-copy and auto-converge
are on). The pure ``GuestWatcher`` decides what that means. Sockets that appear or
vanish are picked up or dropped at each scan; a socket that refuses connections (QEMU
died and left the file) is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migwatch.agent.backends.protocol import Ending, Observation, ObservationSink, StatusSink
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.errors import BackendUnavailable, ControlRefused, MigrationGone
from migwatch.agent.model import Direction, DomainFacts, HostState, Phase, Preflight
from qemu.qmp import (
    ConnectError,
    ExecInterruptedError,
    ExecuteError,
    QMPClient,
    QMPError,
    Runstate,
    StateError,
)

from .jobs import RUNNING, capabilities_of, dirty_rate_of, job_stats, limits_of, status_of
from .watcher import Guest, GuestWatcher, Poll

log = logging.getLogger(__name__)


class _Gone(Exception):
    """The socket is gone or refuses connections: its QEMU exited."""


class _Busy(Exception):
    """Another client holds the monitor (or QEMU did not answer in time)."""


@dataclass(slots=True)
class _Socket:
    """One QMP socket and what is known of the QEMU behind it."""

    path: Path
    watcher: GuestWatcher | None = None  # None until the guest is identified
    pid: int | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one session at a time
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    preflight_at: float = float("-inf")  # when its last measurement ended (or was tried)
    call_ms: float = 0.0  # how long the last batch held the monitor
    # A monitor of the agent's own (``<vmid>.migwatch.qmp``): held open, events listened to.
    dedicated: bool = False
    client: QMPClient | None = None  # the held session (dedicated monitors only)
    raw: socket.socket | None = None
    listener: asyncio.Task[None] | None = None
    events_on: bool = False  # the `events` migration capability was turned on

    @property
    def vmid(self) -> str:
        return vmid_of(self.path)


#: A VM's own monitor for the agent (Proxmox: ``args: -qmp unix:…/<vmid>.migwatch.qmp,…``).
DEDICATED_SUFFIX = ".migwatch.qmp"


def vmid_of(path: Path) -> str:
    """The guest id of a socket: the file name before ``.qmp`` or ``.migwatch.qmp``."""
    return path.name.removesuffix(DEDICATED_SUFFIX).removesuffix(".qmp")


def choose_sockets(paths: set[Path]) -> set[Path]:
    """One socket per guest: its dedicated monitor where it has one, else the shared one."""
    dedicated = {vmid_of(p) for p in paths if p.name.endswith(DEDICATED_SUFFIX)}
    return {p for p in paths if p.name.endswith(DEDICATED_SUFFIX) or vmid_of(p) not in dedicated}


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
    ) -> None:
        self._pattern = pattern
        self._interval = sample_interval_s
        self._scan_interval = scan_interval_s
        self._host = host_name or socket.gethostname()
        self._recorder = recorder
        self._preflight_interval = preflight_interval_s
        self._preflight_periods = tuple(preflight_periods)
        self._preflight_slots = asyncio.Semaphore(max(1, preflight_concurrency))
        self._connect_timeout = connect_timeout_s
        self._clock = clock
        self._sockets: dict[Path, _Socket] = {}
        self._observe: ObservationSink | None = None
        self._scanned = False  # every socket of the first scan has been visited once
        self._recording: set[str] = set()  # UUIDs whose trace is open

    @property
    def name(self) -> str:
        return "qmp"

    @property
    def host(self) -> str:
        return self._host

    # -- sessions ---------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _session(self, sock: _Socket) -> AsyncIterator[QMPClient]:
        """One QMP session under the socket's lock (our own polls and controls never queue
        behind each other on the monitor). A shared monitor is connected for the session and
        released at its end; a dedicated one stays connected, its events listened to."""
        async with sock.lock:
            client = sock.client
            if client is None or client.runstate is not Runstate.RUNNING:
                if client is not None:
                    await self._release(sock)
                client = await self._connect(sock)
            broken = False
            try:
                yield client
            except (
                EOFError,
                ConnectionError,
                TimeoutError,
                StateError,
                ExecInterruptedError,
            ) as exc:
                broken = True
                raise _Busy(f"the session broke: {exc!r}") from exc
            finally:
                if broken or not sock.dedicated:
                    await self._release(sock)

    async def _connect(self, sock: _Socket) -> QMPClient:
        """Connect to the socket (raises ``_Gone`` or ``_Busy``); learn QEMU's pid from it."""
        client = QMPClient(f"migwatch-{sock.vmid}")
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.setblocking(False)
        try:
            try:
                await asyncio.wait_for(
                    asyncio.get_running_loop().sock_connect(raw, str(sock.path)),
                    self._connect_timeout,
                )
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise _Gone(str(exc)) from exc
            except (TimeoutError, BlockingIOError, OSError) as exc:
                raise _Busy(f"cannot connect: {exc!r}") from exc
            if sock.pid is None:
                sock.pid = _peer_pid(raw) or _pid_file(sock.path)
            try:
                await asyncio.wait_for(client.connect(raw), self._connect_timeout)
            except TimeoutError as exc:
                raise _Busy("another client holds the monitor") from exc
            except ConnectError as exc:
                raise _Busy(f"no QMP session: {exc}") from exc
        except BaseException:
            raw.close()
            raise
        sock.client, sock.raw = client, raw
        if sock.dedicated:
            sock.listener = asyncio.create_task(
                self._listen(sock, client), name=f"qmp-events-{sock.vmid}"
            )
        return client

    async def _release(self, sock: _Socket) -> None:
        """Disconnect the socket's session, if any."""
        client, raw, listener = sock.client, sock.raw, sock.listener
        sock.client = sock.raw = sock.listener = None
        if listener is not None and listener is not asyncio.current_task():
            listener.cancel()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()
        if raw is not None:
            raw.close()

    async def _listen(self, sock: _Socket, client: QMPClient) -> None:
        """QEMU's events on a dedicated monitor: fed to the watcher as they come, each one
        waking the socket's poll, so a switch-over or an end is seen at once."""
        async for event in client.events:
            name = str(event.get("event", ""))
            data = event.get("data")
            data = dict(data) if isinstance(data, dict) else {}
            watcher = sock.watcher
            if watcher is not None:
                info = watcher.info
                if self._recorder is not None and info is not None:
                    self._recorder.event(info.domain_uuid, name, data=data)
                self._publish(sock, watcher.event(self._clock(), name, data), None)
            sock.wake.set()

    async def _execute(
        self, client: QMPClient, command: str, args: Mapping[str, object] | None = None
    ) -> Any:
        return await asyncio.wait_for(client.execute(command, args), self._connect_timeout)

    # -- the scan ---------------------------------------------------------------------
    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        self._observe = observe
        status(HostState.OK, "")
        sampler = (
            asyncio.create_task(self._sample_dirty_rates(), name="qmp-dirtyrate")
            if self._preflight_interval > 0
            else None
        )
        try:
            while True:
                paths = choose_sockets({Path(p) for p in glob.glob(self._pattern)})
                for path in sorted(paths - set(self._sockets)):
                    sock = _Socket(path, dedicated=path.name.endswith(DEDICATED_SUFFIX))
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

    async def _first_visit(self, sock: _Socket) -> None:
        deadline = time.monotonic() + 3 * self._connect_timeout
        while sock.watcher is None and sock.path in self._sockets and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _watch(self, sock: _Socket) -> None:
        """Visit one socket until it is gone."""
        try:
            while True:
                try:
                    poll = await self._visit(sock)
                except _Gone as exc:
                    log.info("QMP socket %s is gone (%s)", sock.path, exc)
                    if sock.watcher is not None:
                        self._publish(sock, sock.watcher.gone(self._clock()), None)
                    return
                except _Busy as exc:
                    log.debug("QMP socket %s skipped: %s", sock.path, exc)
                    poll = None
                except QMPError as exc:
                    log.warning("QMP socket %s: %s", sock.path, exc)
                    poll = None
                watcher = sock.watcher
                if poll is not None and watcher is not None:
                    self._publish(sock, watcher.poll(self._clock(), poll), poll)
                busy = watcher is not None and (
                    watcher.role is not None or watcher.status in RUNNING
                )
                sock.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        sock.wake.wait(), self._interval if busy else self._scan_interval
                    )
                if not sock.path.exists():
                    raise _Gone("the socket file was removed")
        except _Gone:
            if sock.watcher is not None:
                self._publish(sock, sock.watcher.gone(self._clock()), None)
        finally:
            self._sockets.pop(sock.path, None)
            await self._release(sock)

    async def _visit(self, sock: _Socket) -> Poll:
        """One batch: identify the guest once, then its state and migration."""
        began = time.monotonic()
        async with self._session(sock) as qmp:
            if sock.watcher is None:
                sock.watcher = GuestWatcher(await self._identify(qmp, sock.path), self._host)
            runstate = (await self._execute(qmp, "query-status")).get("status", "")
            migrate = await self._execute(qmp, "query-migrate")
            limits = None
            if status_of(migrate) in RUNNING or sock.watcher.role is Direction.OUTGOING:
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
        sock.call_ms = (time.monotonic() - began) * 1000
        resident = None
        if sock.watcher.role is None and status_of(migrate) in RUNNING:
            resident = _resident_bytes(sock.pid)
        return Poll(
            runstate=str(runstate), migrate=dict(migrate), limits=limits, resident_bytes=resident
        )

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

    # -- publishing and recording -------------------------------------------------------
    def _publish(self, sock: _Socket, observations: list[Observation], poll: Poll | None) -> None:
        assert self._observe is not None
        recorder = self._recorder
        for obs in observations:
            outgoing = obs.info.direction is Direction.OUTGOING
            uuid = obs.info.domain_uuid
            if recorder is not None and outgoing and poll is not None:
                sample = obs.sample
                if (
                    uuid not in self._recording
                    and sample is not None
                    and (sample.iteration or sample.disk_total)
                ):
                    self._recording.add(uuid)
                    recorder.start(
                        obs.info,
                        obs.limits,
                        self._interval,
                        obs.preflight,
                        uri=str(sock.path),
                        backend="qmp",
                    )
                recorder.stats(
                    uuid,
                    job_stats(poll.migrate),
                    sock.call_ms,
                    runstate=poll.runstate,
                    qmp=dict(poll.migrate),
                )
            self._observe(obs)
            if obs.phase.terminal and outgoing and recorder is not None:
                completed = (
                    job_stats(poll.migrate) if poll and obs.phase is Phase.COMPLETED else None
                )
                outcome = {Phase.COMPLETED: "completed", Phase.CANCELLED: "aborted"}.get(
                    obs.phase, "failed"
                )
                recorder.finish(
                    uuid,
                    outcome,
                    obs.error_message or None,
                    completed if completed and "time_elapsed" in completed else None,
                )
                self._recording.discard(uuid)

    # -- controls -----------------------------------------------------------------------
    def _active(self, domain_uuid: str) -> tuple[_Socket, GuestWatcher]:
        for sock in self._sockets.values():
            w = sock.watcher
            if w is not None and w.guest.uuid == domain_uuid and w.role is Direction.OUTGOING:
                return sock, w
        raise MigrationGone(f"domain {domain_uuid} has no outgoing migration on {self._host}")

    async def _control(
        self,
        domain_uuid: str,
        what: str,
        command: str,
        args: Mapping[str, object] | None = None,
        actions: tuple[tuple[str, object], ...] = (),
    ) -> None:
        """Run one control command in its own session; ``actions``: the trace's ``action``
        lines for it (TRACE_FORMAT: abort, postcopy, pause, downtime ms, speed MiB/s)."""
        sock, watcher = self._active(domain_uuid)
        began = time.monotonic()
        try:
            async with self._session(sock) as qmp:
                await self._execute(qmp, command, args)
        except _Gone as exc:
            raise MigrationGone(f"{what} of {watcher.guest.name}: its QEMU is gone") from exc
        except (_Busy, TimeoutError) as exc:
            raise BackendUnavailable(
                f"{what} of {watcher.guest.name}: the monitor is busy ({exc}); retry"
            ) from exc
        except ExecuteError as exc:
            raise ControlRefused(f"{what} refused by QEMU: {exc}") from exc
        finally:
            sock.wake.set()  # the next poll shows the effect
        if self._recorder is not None and domain_uuid in self._recording:
            call_ms = (time.monotonic() - began) * 1000
            for action, arg in actions:
                self._recorder.action(domain_uuid, action, arg, "ok", call_ms)

    async def abort(self, domain_uuid: str) -> None:
        await self._control(domain_uuid, "abort", "migrate_cancel", actions=(("abort", None),))

    async def force_complete(self, domain_uuid: str) -> bool:
        sock, watcher = self._active(domain_uuid)
        if watcher.limits.postcopy_allowed:
            await self._control(
                domain_uuid,
                "force-complete",
                "migrate-start-postcopy",
                actions=(("postcopy", None),),
            )
            self._publish(sock, watcher.controlled(self._clock(), phase=Phase.POSTCOPY), None)
            return True
        # Without the post-copy capability: pause the guest, so it stops dirtying memory
        # and the copy finishes (Proxmox's `qm suspend` is the same `stop`).
        await self._control(domain_uuid, "force-complete", "stop", actions=(("pause", None),))
        self._publish(sock, watcher.controlled(self._clock(), phase=Phase.PAUSED), None)
        return False

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        sock, watcher = self._active(domain_uuid)
        downtime_ms = None if max_downtime_s is None else max(1, round(max_downtime_s * 1000))
        args: dict[str, int] = {}
        if downtime_ms is not None:
            args["downtime-limit"] = downtime_ms
        if max_bandwidth_bps is not None:
            args["max-bandwidth"] = int(max_bandwidth_bps)  # QMP takes bytes/s: no rounding
        if not args:
            return
        actions: list[tuple[str, object]] = []
        if downtime_ms is not None:
            actions.append(("downtime", downtime_ms))
        if max_bandwidth_bps is not None:
            actions.append(("speed", max_bandwidth_bps / (1 << 20)))
        await self._control(
            domain_uuid, "set-limits", "migrate-set-parameters", args, tuple(actions)
        )
        limits = replace(
            watcher.limits,
            max_downtime_s=(
                watcher.limits.max_downtime_s if downtime_ms is None else downtime_ms / 1000
            ),
            max_bandwidth_bps=(
                watcher.limits.max_bandwidth_bps if max_bandwidth_bps is None else max_bandwidth_bps
            ),
        )
        self._publish(sock, watcher.controlled(self._clock(), limits=limits), None)

    # -- after a restart, and predictions -----------------------------------------------
    def _by_uuid(self, domain: str) -> _Socket | None:
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
            async with self._session(sock) as qmp:
                params = await self._execute(qmp, "query-migrate-parameters")
                caps = capabilities_of(await self._execute(qmp, "query-migrate-capabilities"))
                blocks = await self._execute(qmp, "query-block")
        except _Gone as exc:
            raise MigrationGone(f"the QEMU of {domain} is gone") from exc
        except (_Busy, QMPError) as exc:
            raise BackendUnavailable(f"the monitor of {domain} is busy ({exc}); retry") from exc
        guest = sock.watcher.guest
        return DomainFacts(
            domain_uuid=guest.uuid,
            domain_name=guest.name,
            memory_bytes=guest.memory_bytes or 0,
            disk_bytes=_disk_bytes(blocks),
            limits=limits_of(params, caps),
            preflight=sock.watcher.preflight,
            migrating=sock.watcher.role is not None,
            resident_bytes=_resident_bytes(sock.pid),
        )

    async def close(self) -> None:
        if self._recorder is not None:
            self._recorder.close()
        self._sockets.clear()

    # -- pre-flight dirty-rate measurements ---------------------------------------------
    async def _sample_dirty_rates(self) -> None:
        """Measure each idle running guest about once per ``preflight_interval_s``, never
        while it migrates; the monitor is held only to start and to read each one."""
        running: set[asyncio.Task[None]] = set()
        while True:
            now = time.monotonic()
            for sock in list(self._sockets.values()):
                w = sock.watcher
                if (
                    w is None
                    or not w.idle
                    or now - sock.preflight_at < self._preflight_interval
                    or any(t.get_name() == str(sock.path) for t in running)
                ):
                    continue
                sock.preflight_at = now
                task = asyncio.create_task(self._measure_guest(sock), name=str(sock.path))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(min(self._scan_interval, self._preflight_interval))

    async def _measure_guest(self, sock: _Socket) -> None:
        async with self._preflight_slots:
            rates: dict[float, float] = {}
            for period in self._preflight_periods:
                w = sock.watcher
                if w is None or not w.idle:
                    break
                try:
                    mbps = await self._measure_dirty_rate(sock, period)
                except (_Gone, _Busy, QMPError, TimeoutError) as exc:
                    log.debug("dirty-rate measurement of %s failed: %s", sock.path, exc)
                    break
                if mbps is None or not w.idle:
                    break  # failed, or a migration began meanwhile: not an idle reading
                rates[float(period)] = mbps
            if rates and sock.watcher is not None:
                sock.watcher.preflight = Preflight(measured_at=self._clock(), rates=rates)
                log.debug("pre-flight dirty rate of %s: %s MiB/s", sock.path, rates)
            sock.preflight_at = time.monotonic()

    async def _measure_dirty_rate(self, sock: _Socket, period: int) -> float | None:
        """One page-sampling measurement (never dirty-bitmap: on QEMU 7.2 under TCG it
        killed the guest, NOTES.md); None if a migration started or no result came."""
        async with self._session(sock) as qmp:
            if status_of(await self._execute(qmp, "query-migrate")) in RUNNING:
                return None
            previous = (await self._execute(qmp, "query-dirty-rate")).get("start-time")
            await self._execute(
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
            async with self._session(sock) as qmp:
                reply = await self._execute(qmp, "query-dirty-rate")
            mbps = dirty_rate_of(reply, previous if isinstance(previous, int) else None)
            if mbps is not None or time.monotonic() > deadline:
                return mbps
            await asyncio.sleep(0.2)


# Pages hashed per GiB of guest RAM by one page-sampling measurement. QEMU's default (512;
# libvirt cannot change it) leaves 128 pages of a 256 MiB guest: in the bare-QEMU lab single
# readings were off by 2x. 4096 is QEMU's maximum; hashing them costs the guest nothing
# noticeable (a 4 KiB CRC per page, twice per measurement).
_SAMPLE_PAGES_PER_GIB = 4096


def _peer_pid(raw: socket.socket) -> int | None:
    """The QEMU process's pid from the socket's peer credentials (Linux SO_PEERCRED)."""
    try:
        pid, _uid, _gid = struct.unpack(
            "3i", raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        )
    except (OSError, AttributeError):
        return None
    return pid if pid > 0 else None


def _pid_file(path: Path) -> int | None:
    """Proxmox's ``<vmid>.pid`` beside the socket."""
    try:
        return int(path.with_suffix(".pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _resident_bytes(pid: int | None) -> int | None:
    """The QEMU process's resident memory (``VmRSS``): bounds the guest RAM ever written."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _disk_bytes(blocks: object) -> int:
    """Virtual size of the writable disks (what a storage copy would mirror)."""
    total = 0
    if isinstance(blocks, list):
        for dev in blocks:
            inserted = dev.get("inserted") if isinstance(dev, dict) else None
            if isinstance(inserted, dict) and not inserted.get("ro"):
                image = inserted.get("image")
                if isinstance(image, dict) and isinstance(image.get("virtual-size"), int):
                    total += int(image["virtual-size"])
    return total
