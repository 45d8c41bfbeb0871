"""Sessions on a guest's QMP socket: connect, a batch of commands, disconnect.

**Never monopolise the monitor.** QEMU serves one client per QMP socket at a time, and
the management stack (Proxmox's ``qm`` and its migration task) needs it. So every visit
is one short session: connect, a batch of commands, disconnect; a busy socket (another
client connected) is skipped after ``connect_timeout_s`` rather than waited for. Another
client queued behind a batch waits for the batch only: milliseconds. A dedicated monitor
(``<vmid>.migwatch.qmp``, no one else's) is the exception: held open, its events listened to.

Apart from the backend's scan, controls and pre-flight, which all go through these
sessions: this is where qemu.qmp's connection errors become ``Gone`` (the QEMU exited) or
``Busy`` (skip, retry later), and where each socket's state lives (``Socket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import (
    ConnectError,
    ExecInterruptedError,
    QMPClient,
    Runstate,
    StateError,
)

from .sockets import peer_pid, pid_file, vmid_of
from .watcher import GuestWatcher


class Gone(Exception):
    """The socket is gone or refuses connections: its QEMU exited."""


class Busy(Exception):
    """Another client holds the monitor (or QEMU did not answer in time)."""


@dataclass(slots=True)
class Socket:
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


#: What a dedicated monitor's events are handed to: the socket, the event's name, its data.
EventSink = Callable[[Socket, str, dict[str, Any]], None]


class Sessions:
    """Opens and closes the sessions of every socket, each under its socket's lock."""

    def __init__(self, *, connect_timeout_s: float, on_event: EventSink) -> None:
        self._connect_timeout = connect_timeout_s
        self._on_event = on_event

    @contextlib.asynccontextmanager
    async def session(self, sock: Socket) -> AsyncIterator[QMPClient]:
        """One QMP session under the socket's lock (our own polls and controls never queue
        behind each other on the monitor). A shared monitor is connected for the session and
        released at its end; a dedicated one stays connected, its events listened to."""
        async with sock.lock:
            client = sock.client
            if client is None or client.runstate is not Runstate.RUNNING:
                if client is not None:
                    await self.release(sock)
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
                raise Busy(f"the session broke: {exc!r}") from exc
            finally:
                if broken or not sock.dedicated:
                    await self.release(sock)

    async def _connect(self, sock: Socket) -> QMPClient:
        """Connect to the socket (raises ``Gone`` or ``Busy``); learn QEMU's pid from it."""
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
                raise Gone(str(exc)) from exc
            except (TimeoutError, BlockingIOError, OSError) as exc:
                raise Busy(f"cannot connect: {exc!r}") from exc
            if sock.pid is None:
                sock.pid = peer_pid(raw) or pid_file(sock.path)
            try:
                await asyncio.wait_for(client.connect(raw), self._connect_timeout)
            except TimeoutError as exc:
                raise Busy("another client holds the monitor") from exc
            except ConnectError as exc:
                raise Busy(f"no QMP session: {exc}") from exc
        except BaseException:
            raw.close()
            raise
        sock.client, sock.raw = client, raw
        if sock.dedicated:
            sock.listener = asyncio.create_task(
                self._listen(sock, client), name=f"qmp-events-{sock.vmid}"
            )
        return client

    async def release(self, sock: Socket) -> None:
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

    async def _listen(self, sock: Socket, client: QMPClient) -> None:
        """QEMU's events on a dedicated monitor: handed on as they come, each one waking
        the socket's poll, so a switch-over or an end is seen at once."""
        async for event in client.events:
            name = str(event.get("event", ""))
            data = event.get("data")
            data = dict(data) if isinstance(data, dict) else {}
            self._on_event(sock, name, data)
            sock.wake.set()

    async def execute(
        self, client: QMPClient, command: str, args: Mapping[str, object] | None = None
    ) -> Any:
        """One command, answered within ``connect_timeout_s`` (else TimeoutError)."""
        return await asyncio.wait_for(client.execute(command, args), self._connect_timeout)
