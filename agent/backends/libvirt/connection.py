"""libvirt's connection and event loop, its error codes, and the one translation of its
failures into the agent's errors.

The watcher mirrors libvirt's event, detail and state numbers as enums so it can stay pure;
``check_mirrors`` compares them with the binding when this package is imported, so a binding
that numbers them differently fails loudly at start instead of misreading events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import libvirt
import libvirtaio
from migwatch.agent.backends.jobstats import JobType
from migwatch.agent.backends.libvirt import watcher
from migwatch.agent.errors import BackendUnavailable, ControlError, ControlRefused, MigrationGone

log = logging.getLogger(__name__)

# Error codes, by name so an old binding missing one fails loudly at import.
NO_DOMAIN = libvirt.VIR_ERR_NO_DOMAIN  # 42
OPERATION_INVALID = libvirt.VIR_ERR_OPERATION_INVALID  # 55
OPERATION_UNSUPPORTED = libvirt.VIR_ERR_OPERATION_UNSUPPORTED  # 84: no stats on the destination
CONNECTION_LOST = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_INTERNAL_ERROR,
}


def check_mirrors() -> None:
    """Raise if the watcher's or jobstats' copies of libvirt's numbers disagree with it."""
    pairs = [
        (JobType.NONE, libvirt.VIR_DOMAIN_JOB_NONE),
        (JobType.BOUNDED, libvirt.VIR_DOMAIN_JOB_BOUNDED),
        (JobType.UNBOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED),
        (JobType.COMPLETED, libvirt.VIR_DOMAIN_JOB_COMPLETED),
        (JobType.FAILED, libvirt.VIR_DOMAIN_JOB_FAILED),
        (JobType.CANCELLED, libvirt.VIR_DOMAIN_JOB_CANCELLED),
        (
            watcher.OPERATION_MIGRATION_OUT,
            getattr(libvirt, "VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT", 5),
        ),
        (watcher.DomainStateCode.RUNNING, libvirt.VIR_DOMAIN_RUNNING),
        (watcher.DomainStateCode.SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF),
        (watcher.RUNNING_POSTCOPY, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY),
        (watcher.Started.MIGRATED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED),
    ]
    for event in watcher.Lifecycle:
        pairs.append((event, getattr(libvirt, f"VIR_DOMAIN_EVENT_{event.name}")))
    for kind, prefix in (
        (watcher.Suspended, "SUSPENDED"),
        (watcher.Resumed, "RESUMED"),
        (watcher.Stopped, "STOPPED"),
    ):
        for detail in kind:
            pairs.append((detail, getattr(libvirt, f"VIR_DOMAIN_EVENT_{prefix}_{detail.name}")))
    wrong = [f"{ours!r} != {theirs}" for ours, theirs in pairs if int(ours) != int(theirs)]
    if wrong:
        raise RuntimeError(f"libvirt numbers differ from migwatch's copies: {', '.join(wrong)}")


check_mirrors()


def code(exc: libvirt.libvirtError) -> int:
    return int(exc.get_error_code() or 0)


def map_control_error(exc: libvirt.libvirtError, what: str) -> ControlError:
    """The one translation of libvirt failures of a control into our errors."""
    number = code(exc)
    message = exc.get_error_message() or str(exc)
    if number == NO_DOMAIN:
        return MigrationGone(f"{what}: the domain is no longer on this host ({message})")
    if number in CONNECTION_LOST:
        return BackendUnavailable(f"{what}: libvirt is unreachable ({message}); retry shortly")
    return ControlRefused(f"{what} refused by libvirt: {message}")


def unreachable(uri: str) -> BackendUnavailable:
    return BackendUnavailable(f"libvirt at {uri} is unreachable; retry after it reconnects")


# Domain events the backend listens to, by libvirt's id.
EVENT_LIFECYCLE = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
EVENT_ITERATION = libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION
EVENT_JOB_COMPLETED = libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED


async def open_connection(
    uri: str,
    closed: asyncio.Event,
    callbacks: list[tuple[int, Callable[..., None]]],
) -> tuple[Any, list[int]]:
    """Open ``uri`` with keepalive, a close callback that sets ``closed``, and the domain
    event ``callbacks``; returns the connection and the callback ids."""
    loop = asyncio.get_running_loop()
    conn = await asyncio.to_thread(libvirt.open, uri)

    def on_close(_conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt connection to %s closed (reason %d)", uri, reason)
        loop.call_soon_threadsafe(closed.set)

    conn.registerCloseCallback(on_close, None)
    # Without keepalive a hung (not dead) libvirtd is never noticed.
    await asyncio.to_thread(conn.setKeepAlive, 5, 3)
    ids = []
    for event_id, callback in callbacks:
        ids.append(
            await asyncio.to_thread(conn.domainEventRegisterAny, None, event_id, callback, None)
        )
    return conn, ids


def close_connection(conn: Any, ids: list[int]) -> None:
    """Deregister the callbacks and close (blocking: run in a thread)."""
    for cb_id in ids:
        with contextlib.suppress(libvirt.libvirtError):
            conn.domainEventDeregisterAny(cb_id)
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


_impl_loop: asyncio.AbstractEventLoop | None = None
_impl: libvirtaio.virEventAsyncIOImpl | None = None


def event_impl() -> libvirtaio.virEventAsyncIOImpl:
    """libvirtaio on the running loop, registered before any ``libvirt.open``.

    libvirt takes one event implementation per process and ignores later ones,
    so a second event loop in the same process could never receive events.
    """
    global _impl_loop, _impl
    loop = asyncio.get_running_loop()
    if _impl is None:
        # libvirt prints every error to stderr by default, caught or not.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _impl = libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
        _impl_loop = loop
    elif _impl_loop is not loop:
        raise RuntimeError(
            "libvirt's event loop is bound to another asyncio loop in this process; "
            "run one libvirt backend per process"
        )
    return _impl
