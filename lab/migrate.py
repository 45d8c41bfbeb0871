"""Live migration A -> B, run in a thread, with optional timed actions.

The migrate call is `migrateToURI3(<B's URI>, params, LIVE|PEER2PEER|...)` on
A: peer-to-peer, so A's libvirtd talks to B itself. `migrate_uri` and
`listen_address` are explicit because libvirt refuses loopback as
migration_host and the hostnames labhost-A/B do not resolve (NOTES.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import libvirt

from lab.hosts import HOSTS

# action name -> what it does on the source domain while the job runs.
ACTIONS: dict[str, Callable[[Any, Any], object]] = {
    "abort": lambda dom, arg: dom.abortJob(),
    "postcopy": lambda dom, arg: dom.migrateStartPostCopy(0),
    "downtime": lambda dom, arg: dom.migrateSetMaxDowntime(int(arg), 0),
    "speed": lambda dom, arg: dom.migrateSetMaxSpeed(int(arg), 0),
}


@dataclass(frozen=True)
class Action:
    """Something done to the running migration `after_s` seconds after the migrate call."""

    after_s: float
    action: str
    arg: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; known: {sorted(ACTIONS)}")

    @classmethod
    def parse(cls, text: str) -> Action:
        """`20:postcopy`, `30:abort`, `22:downtime=3000`, `15:speed=120`."""
        after, _, rest = text.partition(":")
        name, _, arg = rest.partition("=")
        return cls(float(after), name, int(arg) if arg else None)

    def as_list(self) -> list[object]:
        after = float(self.after_s)
        return [int(after) if after.is_integer() else after, self.action, self.arg]


@dataclass(frozen=True)
class MigrationSpec:
    name: str = "lab1"
    bandwidth_mib_s: int = 50
    postcopy: bool = False
    postcopy_bandwidth_mib_s: int | None = None
    storage: bool = False
    auto_converge: bool = False
    actions: tuple[Action, ...] = ()
    src: str = "A"
    dst: str = "B"

    @property
    def dconnuri(self) -> str:
        return HOSTS[self.dst].uri

    def flags(self) -> int:
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
        if self.postcopy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if self.storage:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        if self.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        return int(flags)

    def params(self) -> dict[str, object]:
        params: dict[str, object] = {
            libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1",
            libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
            libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: self.bandwidth_mib_s,
        }
        if self.postcopy_bandwidth_mib_s is not None:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = self.postcopy_bandwidth_mib_s
        if self.storage:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = ["vda"]
        return params


def flag_names(flags: int) -> list[str]:
    """VIR_MIGRATE_* names set in `flags`, sorted by name (as in the shared traces)."""
    names = [
        name
        for name in dir(libvirt)
        if name.startswith("VIR_MIGRATE_")
        and not name.startswith(("VIR_MIGRATE_PARAM_", "VIR_MIGRATE_MAX_SPEED_"))
        and isinstance(getattr(libvirt, name), int)
        and getattr(libvirt, name) & flags
        and getattr(libvirt, name).bit_count() == 1  # single flags, not masks
    ]
    return sorted(names)


def error_dict(err: libvirt.libvirtError) -> dict[str, object]:
    """A libvirtError as plain data: storing the exception itself would keep
    its traceback, hence domain and connection objects, alive (Pitfall 10)."""
    return {"message": str(err), "code": err.get_error_code(), "domain": err.get_error_domain()}


@dataclass
class Outcome:
    outcome: str  # completed | aborted | failed
    error: dict[str, object] | None
    duration_s: float


@dataclass
class ActionRecord:
    t: float
    action: str
    arg: int | None
    result: str
    call_ms: float


ActionHook = Callable[[ActionRecord], None]


@dataclass
class MigrationHandle:
    """A migration running in a background thread. `wait()` returns its Outcome."""

    spec: MigrationSpec
    dom_uuid: str
    # time.time() when the migration thread was started, ~1 ms before the
    # migrate call itself: the zero of a trace's dt and of the actions' times.
    started_at: float = 0.0
    actions_done: list[ActionRecord] = field(default_factory=list)
    _outcome: Outcome | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Outcome:
        if not self._done.wait(timeout):
            raise TimeoutError(f"migration of {self.spec.name} still running after {timeout}s")
        for thread in self._threads:
            thread.join()
        assert self._outcome is not None
        return self._outcome


def _classify(err: libvirt.libvirtError) -> str:
    return "aborted" if err.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED else "failed"


def _migrate_thread(handle: MigrationHandle, conn: Any, own_conn: bool) -> None:
    spec = handle.spec
    try:
        dom = conn.lookupByUUIDString(handle.dom_uuid)
        start = time.monotonic()
        try:
            dom.migrateToURI3(spec.dconnuri, spec.params(), spec.flags())
            handle._outcome = Outcome("completed", None, time.monotonic() - start)
        except libvirt.libvirtError as err:
            handle._outcome = Outcome(_classify(err), error_dict(err), time.monotonic() - start)
        del dom
    except libvirt.libvirtError as err:  # lookup failed: no migration happened
        handle._outcome = Outcome("failed", error_dict(err), 0.0)
    finally:
        handle._done.set()
        if own_conn:
            # The actions thread shares the connection: it stops once _done
            # is set, and must be gone before the connection is closed.
            for thread in handle._threads:
                if thread is not threading.current_thread():
                    thread.join()
            conn.close()


def _actions_thread(handle: MigrationHandle, conn: Any, hook: ActionHook | None) -> None:
    """Run the planned actions at their times (relative to the migrate call);
    actions due after the migration ended are skipped."""
    try:
        dom = conn.lookupByUUIDString(handle.dom_uuid)
    except libvirt.libvirtError:
        return  # the domain is gone: the migrate thread reports why
    try:
        for action in sorted(handle.spec.actions, key=lambda a: a.after_s):
            due = handle.started_at + action.after_s
            while not handle.done() and time.time() < due:
                handle._done.wait(min(0.05, max(0.0, due - time.time())))
            if handle.done():
                return
            start = time.monotonic()
            try:
                ACTIONS[action.action](dom, action.arg)
                result = "ok"
            except libvirt.libvirtError as err:
                result = str(err)
            record = ActionRecord(
                time.time(), action.action, action.arg, result, (time.monotonic() - start) * 1000
            )
            handle.actions_done.append(record)
            if hook is not None:
                hook(record)
    finally:
        del dom


def start_migration(
    spec: MigrationSpec,
    dom_uuid: str,
    conn: Any | None = None,
    action_hook: ActionHook | None = None,
) -> MigrationHandle:
    """Start the migration in a thread and return at once.

    `conn` is a connection to the source to use (the recorder passes the one it
    opened on its event loop); by default the thread opens and closes its own.
    `action_hook` is called (from the actions thread) after each action.
    """
    own_conn = conn is None
    mconn = libvirt.open(HOSTS[spec.src].uri) if conn is None else conn
    handle = MigrationHandle(spec, dom_uuid)
    if spec.actions:
        # The actions share the migration's connection: libvirt connections are
        # thread-safe, and a second call is fine while migrateToURI3 blocks.
        handle._threads.append(
            threading.Thread(
                target=_actions_thread,
                args=(handle, mconn, action_hook),
                name=f"actions-{spec.name}",
                daemon=True,
            )
        )
    handle._threads.append(
        threading.Thread(
            target=_migrate_thread,
            args=(handle, mconn, own_conn),
            name=f"migrate-{spec.name}",
            daemon=True,
        )
    )
    handle.started_at = time.time()
    # Actions thread first: the migrate thread joins it before closing its own
    # connection, and a thread cannot be joined before it has started.
    for thread in handle._threads:
        thread.start()
    return handle
