"""Publishes the policy's notifications with oslo.messaging's ``Notifier`` (``messagingv2``).

The bus never hurts the agent: this task subscribes to the hub like a watch stream would
(a bounded, conflating subscription, so publishing never waits for us), feeds the pure
``NotifyPolicy``, and hands what it says to send to one worker thread that owns the
``Notifier``. A slow or absent broker only delays that thread; sampling and the gRPC
streams run on the event loop untouched, and the policy keeps what is unsent (bounded per
migration; ends until the broker takes them).

Delivery: the notifier runs with ``retry=0`` so a send fails fast instead of blocking for
ever, and its transport records the failure (oslo.messaging's driver would only log it),
so the policy can put the notification back. RabbitMQ confirms each publish
(oslo.messaging sets ``confirm_publish``): a send that returned was taken by the broker.
Between failures we back off (1 s doubling to ``backoff_max_s``, jittered) and log one
line when the bus goes away and one when it is back.

oslo.messaging is imported in the worker thread on first use: it is an optional
dependency (``pip install 'migwatch[notify]'``) and slow to import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from migwatch.agent.core.hub import Filter, Hub, Update
from migwatch.agent.notify import payload as pl
from migwatch.agent.notify.policy import HostReport, Kind, Notification, NotifyPolicy, PolicyConfig

log = logging.getLogger(__name__)

_EVENT_TYPES = {
    Kind.START: pl.EVENT_START,
    Kind.PROGRESS: pl.EVENT_PROGRESS,
    Kind.END: pl.EVENT_END,
    Kind.HOST: pl.EVENT_HOST,
}
# How long the loop waits for the hub when nothing is due: only bounds how late a
# closed subscription or a stop is noticed.
_IDLE_S = 1.0


class BusUnavailable(Exception):
    """oslo.messaging is not installed, or the transport URL is wrong."""


@dataclass(frozen=True, slots=True)
class BusConfig:
    url: str  # oslo.messaging transport URL, e.g. rabbit://user:pass@host:5672/
    topic: str = "migwatch_notifications"
    interval_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    # oslo.config file with the deployment's messaging settings ("": oslo's defaults).
    config_file: str = ""


def private_conf(config_file: str = "") -> Any:
    """An oslo.config ``ConfigOpts`` of our own (never the process's global CONF or argv),
    reading ``config_file`` if given. The messaging drivers register their options on it
    when the transport is made; oslo.config resolves them from the file then."""
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    files = [config_file] if config_file else []
    conf([], project="migwatch", default_config_files=files, default_config_dirs=[])
    return conf


def redact(url: str) -> str:
    """The URL with any password replaced, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def import_oslo_messaging() -> Any:
    """oslo.messaging, imported without eventlet monkey-patching and without its import-time
    deprecation noise (eventlet and dnspython warn when futurist imports them)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from oslo_service import backend

            with contextlib.suppress(Exception):  # already chosen by the host program
                backend.init_backend(backend.BackendType.THREADING)
            import oslo_messaging
    except ImportError as exc:
        raise BusUnavailable(
            f"--notify-url needs oslo.messaging: pip install 'migwatch[notify]' ({exc})"
        ) from exc
    return oslo_messaging


class _Sender:
    """The worker thread's side: one ``Notifier``, one send at a time."""

    def __init__(self, config: BusConfig) -> None:
        self._config = config
        self._notifier: Any = None
        self._transport: Any = None
        self.last_error: Exception | None = None

    def connect(self) -> None:
        """Build the transport and the Notifier (no network yet: the first send connects);
        ``BusUnavailable`` when oslo.messaging is missing or the URL names no driver."""
        self._connect()

    def _connect(self) -> None:
        om = import_oslo_messaging()
        # A private configuration: never the process's global CONF, never its argv; the
        # deployment's messaging settings from --notify-config, if given.
        conf = private_conf(self._config.config_file)
        sender = self

        base_class: Any = om.transport.NotificationTransport

        class AckingTransport(base_class):  # type: ignore[misc]
            """Records a failed send: the messagingv2 driver only logs it."""

            def _send_notification(self, *args: Any, **kwargs: Any) -> None:
                try:
                    super()._send_notification(*args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - any failure means: not taken
                    sender.last_error = exc

        try:
            base = om.get_notification_transport(conf, url=self._config.url)
        except Exception as exc:
            raise BusUnavailable(f"bad --notify-url {redact(self._config.url)}: {exc}") from exc
        self._transport = AckingTransport(base._driver)
        self._notifier = om.Notifier(
            self._transport,
            publisher_id="migwatch-agent",
            driver="messagingv2",
            topics=[self._config.topic],
            retry=0,
        )

    def send(self, notes: list[Notification]) -> tuple[int, Exception | None]:
        """Send in order; stop at the first failure. Returns (how many sent, the error)."""
        if self._notifier is None:
            self._connect()
        for i, n in enumerate(notes):
            event_type, body, host = _render(n)
            self.last_error = None
            self._notifier.prepare(publisher_id=f"migwatch-agent:{host}").info({}, event_type, body)
            if self.last_error is not None:
                return i, self.last_error
        return len(notes), None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.cleanup()


def _render(n: Notification) -> tuple[str, dict[str, Any], str]:
    """(event_type, payload, host of the publisher) of a notification."""
    if n.host is not None:
        h = n.host
        return (
            _EVENT_TYPES[n.kind],
            pl.host_payload(h.host, h.backend, h.state, h.message, h.version),
            h.host,
        )
    assert n.migration is not None
    return _EVENT_TYPES[n.kind], pl.migration_payload(n.migration), n.migration.agent_host


class _Worker:
    """One daemon thread running calls in order; results come back as asyncio futures.

    A daemon thread, not an executor: a send stuck on a frozen broker must not keep the
    agent from exiting (``concurrent.futures`` joins its threads at exit)."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="migwatch-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            call()

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def call() -> None:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's future
                loop.call_soon_threadsafe(_settle, fut, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, fut, result, None)

        self._calls.put(call)
        return fut

    def stop(self, timeout_s: float) -> None:
        self._calls.put(None)
        self._thread.join(timeout_s)


def _settle(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.cancelled():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


class BusPublisher:
    """The agent's notifications on the bus; see the module docstring."""

    def __init__(
        self,
        config: BusConfig,
        hub: Hub,
        host_report: Callable[[], HostReport],
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.policy = NotifyPolicy(PolicyConfig(interval_s=config.interval_s))
        self._hub = hub
        self._host_report = host_report
        self._clock = clock
        self._rng = rng
        self._sender = _Sender(config)
        self._sender.connect()  # a bad URL or a missing oslo.messaging fails the start
        self._worker = _Worker()
        self._in_flight: tuple[list[Notification], asyncio.Future[Any]] | None = None
        self._retry_at = 0.0
        self._delay_s = 0.0
        self._down_since: float | None = None
        self.outages = 0
        self.up = False  # the last send went through

    async def run(self) -> None:
        """Follow the hub and publish until cancelled."""
        snapshot, sub = self._hub.subscribe(Filter())
        try:
            self._feed(snapshot)
            reader: asyncio.Task[list[Update]] | None = None
            while True:
                self._maybe_send()
                if reader is None and not sub.closed:
                    reader = asyncio.create_task(sub.next_batch(self._wait_s()))
                waits: list[asyncio.Future[Any]] = [
                    f
                    for f in (reader, self._in_flight[1] if self._in_flight else None)
                    if f is not None
                ]
                if not waits:
                    await asyncio.sleep(self._wait_s())
                    continue
                done, _ = await asyncio.wait(
                    waits, timeout=self._wait_s(), return_when=asyncio.FIRST_COMPLETED
                )
                if reader is not None and reader in done:
                    self._feed(reader.result())
                    reader = None
                if self._in_flight is not None and self._in_flight[1].done():
                    self._settle_send()
        finally:
            if reader is not None:
                reader.cancel()
            self._hub.unsubscribe(sub)

    def _feed(self, updates: list[Update]) -> None:
        now = self._clock()
        for u in updates:
            if u.migration is not None:
                self.policy.observe(u.migration, now)
            else:  # the hub's agent-status update
                self.policy.observe_host(self._host_report())

    def _wait_s(self) -> float:
        now = self._clock()
        due = self.policy.next_due(now)
        wait = _IDLE_S if due is None else due - now
        if self._retry_at > now:
            wait = max(wait, self._retry_at - now)
        return min(_IDLE_S, max(0.01, wait))

    def _maybe_send(self) -> None:
        now = self._clock()
        if self._in_flight is not None or now < self._retry_at:
            return
        notes = self.policy.take(now)
        if notes:
            self._in_flight = (notes, self._worker.submit(lambda: self._sender.send(notes)))

    def _settle_send(self) -> None:
        assert self._in_flight is not None
        notes, fut = self._in_flight
        self._in_flight = None
        try:
            count, error = fut.result()
        except BusUnavailable as exc:
            count, error = 0, exc
        self.policy.sent(notes[:count])
        self.policy.failed(notes[count:])
        now = self._clock()
        if error is None:
            if self._down_since is not None:
                log.info(
                    "notification bus %s is back after %.0f s; %d notifications waiting",
                    redact(self.config.url),
                    now - self._down_since,
                    self.policy.pending,
                )
            self._down_since, self._delay_s, self.up = None, 0.0, True
            return
        self.up = False
        if self._down_since is None:  # one line per outage
            self._down_since = now
            self.outages += 1
            log.warning(
                "notification bus %s unreachable (%s); keeping events (ends until the broker "
                "takes them) and retrying with backoff",
                redact(self.config.url),
                error,
            )
        self._delay_s = min(
            self.config.backoff_max_s, max(self.config.backoff_initial_s, self._delay_s * 2)
        )
        self._retry_at = now + self._delay_s * (0.8 + 0.4 * self._rng())

    async def close(self, grace_s: float) -> None:
        """Last chance for pending ends (up to ``grace_s``), then stop the worker."""
        deadline = self._clock() + grace_s
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while self._clock() < deadline:
                    if self._in_flight is not None:
                        await asyncio.wait([self._in_flight[1]])
                        self._settle_send()
                        if not self.up:
                            await asyncio.sleep(0.2)  # no tight loop against a dead broker
                    self._retry_at = min(self._retry_at, self._clock())
                    self._maybe_send()
                    if self._in_flight is None:
                        break
        if self.policy.unsent_ends:
            log.warning(
                "stopping with %d migration end notifications unsent", self.policy.unsent_ends
            )
        self._worker.submit(self._sender.close)
        await asyncio.to_thread(self._worker.stop, 2.0)
