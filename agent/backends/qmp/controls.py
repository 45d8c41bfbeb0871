"""The operator's controls on an outgoing migration, as QMP commands.

Abort is ``migrate_cancel``; force-complete is ``migrate-start-postcopy`` when the
migration allows post-copy, else ``stop`` (the guest paused, so it stops dirtying memory);
new limits are ``migrate-set-parameters``. Each runs in a session of its own, wakes the
socket's poll so the effect is seen at once, and is written to the trace as ``action`` lines.

Apart from the scan (``backend``) because they are the agent's only writes to a guest's
monitor, and the one place QMP's refusals become the agent's errors: ``Gone`` →
``MigrationGone``, ``Busy`` → ``BackendUnavailable`` (retry), ``ExecuteError`` →
``ControlRefused``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from migwatch.agent.errors import BackendUnavailable, ControlRefused, MigrationGone
from migwatch.agent.model import Direction, Phase
from qemu.qmp import ExecuteError

from .publish import Publisher
from .session import Busy, Gone, Sessions, Socket
from .watcher import GuestWatcher


class Controls:
    """Abort, force-complete and new limits for the outgoing migrations of one host."""

    def __init__(
        self,
        *,
        sockets: Callable[[], Iterable[Socket]],
        sessions: Sessions,
        publisher: Publisher,
        host: str,
        clock: Callable[[], float],
    ) -> None:
        self._sockets = sockets
        self._sessions = sessions
        self._publisher = publisher
        self._host = host
        self._clock = clock

    def _active(self, domain_uuid: str) -> tuple[Socket, GuestWatcher]:
        for sock in self._sockets():
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
            async with self._sessions.session(sock) as qmp:
                await self._sessions.execute(qmp, command, args)
        except Gone as exc:
            raise MigrationGone(f"{what} of {watcher.guest.name}: its QEMU is gone") from exc
        except (Busy, TimeoutError) as exc:
            raise BackendUnavailable(
                f"{what} of {watcher.guest.name}: the monitor is busy ({exc}); retry"
            ) from exc
        except ExecuteError as exc:
            raise ControlRefused(f"{what} refused by QEMU: {exc}") from exc
        finally:
            sock.wake.set()  # the next poll shows the effect
        self._publisher.actions(domain_uuid, actions, (time.monotonic() - began) * 1000)

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
            self._publisher.publish(
                sock, watcher.controlled(self._clock(), phase=Phase.POSTCOPY), None
            )
            return True
        # Without the post-copy capability: pause the guest, so it stops dirtying memory
        # and the copy finishes (Proxmox's `qm suspend` is the same `stop`).
        await self._control(domain_uuid, "force-complete", "stop", actions=(("pause", None),))
        self._publisher.publish(sock, watcher.controlled(self._clock(), phase=Phase.PAUSED), None)
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
        self._publisher.publish(sock, watcher.controlled(self._clock(), limits=limits), None)
