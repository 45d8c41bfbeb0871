"""Following the agents through the bus: oslo.messaging's notification listener.

::

    async with watch_bus("rabbit://user:pass@rabbit:5672/") as bus:
        async for event, updates in bus:      # BusEvent, [MigrationUpdate | AgentUpdate]
            ...
            bus.snapshot()                    # the same FleetSnapshot as Fleet.snapshot()

The listener runs oslo.messaging's threading executor; each notification is handed to
the event loop through a bounded queue, and the listener thread waits while it is full,
so the broker keeps what we have not read (it acknowledges only after we took it).

Queue: by default a private queue (an oslo.messaging "pool" of our own) bound to the
topic and deleted when we leave, so `migwatch listen` never takes events away from other
consumers.
With ``pool``, a named queue shared by every consumer of that pool and kept by the broker
across our restarts (a control plane that must not miss an end while it is down).
Needs ``pip install 'migwatch[notify]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from .errors import MigwatchError
from .model import FleetSnapshot, Update
from .notifications import BusEvent, BusFleet, PayloadError, event_from_notification

DEFAULT_TOPIC = "migwatch_notifications"
# Notifications waiting for the consumer; when full the listener thread waits, and the
# broker holds the rest (it is the queue built for that).
_QUEUE_SIZE = 1024
_STOP_S = 10.0  # leaving waits at most this long for the listener to stop
_T = TypeVar("_T")


class BusError(MigwatchError):
    """The bus cannot be listened to (oslo.messaging missing, or a bad URL)."""


def _oslo() -> Any:
    import warnings

    try:
        with warnings.catch_warnings():
            # eventlet and dnspython warn when futurist imports them; nothing is patched.
            warnings.simplefilter("ignore")
            from oslo_service import backend

            with contextlib.suppress(Exception):
                backend.init_backend(backend.BackendType.THREADING)
            import oslo_messaging
    except ImportError as exc:
        raise BusError(
            "", f"listening to the bus needs oslo.messaging: pip install 'migwatch[notify]' ({exc})"
        ) from exc
    return oslo_messaging


class BusWatch:
    """The async iterator ``watch_bus`` yields."""

    def __init__(self, queue: asyncio.Queue[BusEvent]) -> None:
        self._queue = queue
        self.fleet = BusFleet()

    def __aiter__(self) -> BusWatch:
        return self

    async def __anext__(self) -> tuple[BusEvent, list[Update]]:
        event = await self._queue.get()
        return event, self.fleet.apply(event, time.time())

    def snapshot(self) -> FleetSnapshot:
        return self.fleet.snapshot()


def _start_listener(
    url: str, topic: str, pool: str | None, deliver: Any, config_file: str = ""
) -> tuple[Any, Any]:
    om = _oslo()
    from oslo_config import cfg

    # Our own configuration, never the process's; the deployment's messaging settings
    # (durable or quorum queues, TLS, control_exchange) from ``config_file`` if given.
    conf = cfg.ConfigOpts()
    files = [config_file] if config_file else []
    conf([], project="migwatch", default_config_files=files, default_config_dirs=[])
    try:
        transport = om.get_notification_transport(conf, url=url)
    except Exception as exc:
        raise BusError("", f"bad --notify-url: {exc}") from exc

    class Endpoint:
        def info(
            self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, metadata: Any
        ) -> None:
            deliver(publisher_id, event_type, payload, metadata)

    listener = om.get_notification_listener(
        transport, [om.Target(topic=topic)], [Endpoint()], executor="threading", pool=pool
    )
    listener.start()
    return listener, transport


def _stop_listener(listener: Any, transport: Any, url: str, private_queue: str | None) -> None:
    listener.stop()
    listener.wait()
    transport.cleanup()
    if private_queue is not None and url.startswith("rabbit://"):
        # oslo.messaging keeps pool queues; ours served this process only.
        from kombu import Connection  # type: ignore[attr-defined]

        with (
            contextlib.suppress(Exception),
            Connection(  # type: ignore[no-untyped-call]
                "amqp://" + url.removeprefix("rabbit://").split(",")[0], connect_timeout=5
            ) as conn,
        ):
            conn.default_channel.queue_delete(private_queue)


async def _in_daemon_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` in a daemon thread: oslo.messaging's start or stop can hang on a dead
    broker, and neither may keep the process from exiting (``asyncio.to_thread``'s
    executor is joined at exit)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="migwatch-bus", daemon=True).start()
    return await fut


@asynccontextmanager
async def watch_bus(
    url: str, topic: str = DEFAULT_TOPIC, *, pool: str | None = None, config_file: str = ""
) -> AsyncIterator[BusWatch]:
    """Listen to the agents' notifications on ``url`` (see the module docstring);
    ``config_file``: an oslo.config file with the deployment's messaging settings, as the
    agents' ``--notify-config``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[BusEvent] = asyncio.Queue(_QUEUE_SIZE)
    closing = False

    def deliver(publisher_id: str, event_type: str, payload: Any, metadata: Any) -> None:
        # The listener's thread. Not ours (another service's event): acknowledged, skipped.
        try:
            event = event_from_notification(publisher_id, event_type, payload, metadata or {})
        except (PayloadError, KeyError, TypeError, ValueError):
            return
        if closing:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are leaving
            asyncio.run_coroutine_threadsafe(queue.put(event), loop).result()

    private = None
    if pool is None:
        private = f"migwatch-listen-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    listener, transport = await _in_daemon_thread(
        _start_listener, url, topic, pool or private, deliver, config_file
    )
    try:
        yield BusWatch(queue)
    finally:
        closing = True
        while not queue.empty():  # a listener thread waiting on a full queue may finish
            queue.get_nowait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_S):
                await _in_daemon_thread(_stop_listener, listener, transport, url, private)
