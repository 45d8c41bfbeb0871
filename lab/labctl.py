"""migwatch's libvirt lab: two libvirt hosts on one machine, a guest with a
known dirty rate, real live migrations between them, and a trace recorder.

Python API (for tests)::

    from lab.labctl import Lab
    lab = Lab()
    lab.up()                                    # both daemons, caches warm
    uuid = lab.boot_guest("lab1", mem_mib=512, fill_mib=256, ws_mib=64, rate=10)
    handle = lab.start_migration("lab1", bandwidth_mib_s=100)
    outcome = handle.wait(120)                  # Outcome(outcome="completed", ...)
    assert lab.domain_running_on("B", "lab1") and lab.guest_check("B", "lab1").ok
    lab.destroy_all()

CLI: ``python -m lab.labctl up|down|status|boot|migrate|check|destroy``; recording is
``python -m lab.record`` (lab/record.py)
(``--help`` on each). State lives in $MIGWATCH_LAB_DIR (default /var/tmp/migwatch-lab).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import libvirt

from lab import guest as guestmod
from lab import hosts
from lab.guest import GuestCheck, GuestSpec, WorkloadSpec
from lab.hosts import HOSTS, LabError
from lab.migrate import Action, MigrationHandle, MigrationSpec, Outcome, start_migration

__all__ = [
    "Action",
    "GuestCheck",
    "GuestSpec",
    "Lab",
    "LabError",
    "MigrationHandle",
    "MigrationSpec",
    "Outcome",
]

# libvirt's default error handler prints every error to stderr, even the ones
# the caller catches (Pitfall 9).
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _domain_state_dict(dom: Any) -> dict[str, object]:
    state, reason = dom.state()
    return {"state": state, "reason": reason, "active": bool(dom.isActive())}


class Lab:
    """Handle on the lab. Stateless apart from the daemons it starts: every
    method opens a short-lived connection unless `conns` (host -> open
    virConnect, owned by the caller) is given, as the recorder does to keep all
    its connections on its event loop."""

    def __init__(self, conns: Mapping[str, Any] | None = None) -> None:
        self._conns = dict(conns or {})

    # ------------------------------------------------------------------ hosts

    @staticmethod
    def uri(host: str) -> str:
        """`qemu+tcp://127.0.0.1:26509/system` for "A", 26510 for "B" (MIGWATCH_LAB_PORT_BASE)."""
        return HOSTS[host].uri

    @staticmethod
    def state_dir() -> Path:
        return hosts.state_dir()

    def up(self, timeout: float = 60.0) -> dict[str, float]:
        """Start both daemons (a no-op when both are already up and listening)
        and warm their QEMU capabilities caches. Stale state from a killed run
        is cleaned first. Returns timings in seconds."""
        timings: dict[str, float] = {}
        if all(hosts.host_status(h).healthy for h in HOSTS):
            return timings
        hosts.stop_all()  # whatever is left of a previous run, even half of it
        hosts.check_ports_free()  # someone else's daemon: one clear line, before we start
        start = time.monotonic()
        records = {h: hosts.start_daemon(spec) for h, spec in HOSTS.items()}
        for h, spec in HOSTS.items():
            hosts.wait_listening(spec, records[h], timeout)
        timings["daemons_listening_s"] = time.monotonic() - start
        # The cold probe of QEMU takes ~8 s; B then reuses A's cache files.
        timings["warm_A_s"] = self._warm("A")
        hosts.seed_capabilities_cache("A", "B")
        timings["warm_B_s"] = self._warm("B")
        timings["up_s"] = time.monotonic() - start
        return timings

    def restart_daemon(self, host: str, timeout: float = 30.0) -> float:
        """Stop one host's libvirtd (SIGTERM, as a service restart would) and start
        it again; its running QEMUs are left alone and re-attached. Returns seconds."""
        start = time.monotonic()
        record = hosts.read_record(host)
        if record is not None:
            hosts._terminate(record.pid, record.start_time, timeout)
        spec = HOSTS[host]
        hosts.wait_listening(spec, hosts.start_daemon(spec), timeout)
        return time.monotonic() - start

    def _warm(self, host: str) -> float:
        start = time.monotonic()
        with self._conn(host) as conn:
            conn.getCapabilities()
        return time.monotonic() - start

    def down(self) -> None:
        """Stop the daemons and every QEMU of this lab. Nothing global is
        unmounted: the namespaces end with their processes."""
        with contextlib.suppress(libvirt.libvirtError, LabError):
            self.destroy_all()
        hosts.stop_all()

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for h in HOSTS:
            st = hosts.host_status(h)
            info: dict[str, object] = {
                "pid": st.pid,
                "alive": st.alive,
                "listening": st.listening,
                "uri": self.uri(h),
            }
            if st.healthy:
                with self._conn(h) as conn:
                    info["domains"] = {
                        d.name(): _domain_state_dict(d) for d in conn.listAllDomains()
                    }
            out[h] = info
        return out

    @contextlib.contextmanager
    def _conn(self, host: str) -> Iterator[Any]:
        if host in self._conns:
            yield self._conns[host]
            return
        try:
            conn = libvirt.open(self.uri(host))
        except libvirt.libvirtError as err:
            raise LabError(f"cannot connect to lab host {host} ({err}); is the lab up?") from None
        try:
            yield conn
        finally:
            conn.close()

    # ------------------------------------------------------------------ guests

    def boot_guest(
        self,
        name: str = "lab1",
        mem_mib: int = 512,
        fill_mib: int = 256,
        ws_mib: int = 128,
        rate: int = 0,
        disk_mib: int = 0,
        disk_rate: int = 0,
        disk_fill_mib: int | None = None,
        timeout: float = 120.0,
    ) -> str:
        """Boot a transient guest on A and wait until the dirtier has filled
        its memory. `disk_mib` > 0 attaches a qcow2 as vda (half of it written
        before boot unless `disk_fill_mib` says otherwise). Returns the UUID."""
        spec = GuestSpec(
            name=name,
            mem_mib=mem_mib,
            fill_mib=fill_mib,
            ws_mib=ws_mib,
            rate=rate,
            disk_mib=disk_mib,
            disk_rate=disk_rate,
            disk_fill_mib=(disk_mib // 2 if disk_fill_mib is None else disk_fill_mib),
        )
        return self.boot(spec, timeout=timeout)

    def boot(self, spec: GuestSpec, host: str = "A", timeout: float = 120.0) -> str:
        guestmod.check_built(spec)
        self.destroy(spec.name)
        guestmod.reset_serial_logs(spec.name)
        guestmod.prepare_disks(spec)
        with self._conn(host) as conn:
            dom = conn.createXML(guestmod.domain_xml(spec), 0)
            uuid: str = dom.UUIDString()
            del dom  # no domain object may outlive its connection (Pitfall 10)
        guestmod.wait_filled(
            host, spec.name, timeout, alive=lambda: self.domain_running_on(host, spec.name)
        )
        return uuid

    def destroy(self, name: str) -> None:
        """Destroy (and undefine) the guest `name` on both hosts, if present."""
        for h in HOSTS:
            with self._conn(h) as conn:
                try:
                    dom = conn.lookupByName(name)
                except libvirt.libvirtError:
                    continue
                self._destroy_dom(dom)
                del dom

    def destroy_all(self) -> None:
        """Destroy every domain on both hosts (and undefine persistent ones)."""
        for h in HOSTS:
            with self._conn(h) as conn:
                # pop(): no loop variable keeps the last domain, hence the
                # connection, alive after the connection is closed (Pitfall 10).
                doms = conn.listAllDomains()
                while doms:
                    self._destroy_dom(doms.pop())

    @staticmethod
    def _destroy_dom(dom: Any) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isPersistent():
                dom.undefine()

    def domain_running_on(self, host: str, name: str) -> bool:
        with self._conn(host) as conn:
            try:
                dom = conn.lookupByName(name)
                running: bool = dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
                del dom
                return running
            except libvirt.libvirtError:
                return False

    def guest_check(self, host: str, name: str, wait_s: float | None = None) -> GuestCheck:
        """Panic / VERIFY FAIL in `host`'s serial log, and whether the dirtier
        still makes progress there."""
        return guestmod.guest_check(host, name, wait_s)

    def serial_tail(self, host: str, name: str, n: int = 6) -> list[str]:
        return guestmod.dirtier_tail(host, name, n)

    # ------------------------------------------------------------------ migration

    def start_migration(
        self,
        name: str = "lab1",
        bandwidth_mib_s: int = 50,
        postcopy: bool = False,
        storage: bool = False,
        auto_converge: bool = False,
        postcopy_bandwidth_mib_s: int | None = None,
        actions: Sequence[Action | tuple[float, str, int | None]] = (),
    ) -> MigrationHandle:
        """Start a live migration A -> B of `name` in a thread; returns at once.
        `actions`: e.g. [(20, "postcopy", None), (30, "abort", None),
        (22, "downtime", 3000), (15, "speed", 120)], seconds after the call."""
        spec = MigrationSpec(
            name=name,
            bandwidth_mib_s=bandwidth_mib_s,
            postcopy=postcopy,
            storage=storage,
            auto_converge=auto_converge,
            postcopy_bandwidth_mib_s=postcopy_bandwidth_mib_s,
            actions=tuple(a if isinstance(a, Action) else Action(*a) for a in actions),
        )
        return self.start(spec)

    def start(self, spec: MigrationSpec, action_hook: Any = None) -> MigrationHandle:
        with self._conn(spec.src) as conn:
            dom = conn.lookupByName(spec.name)
            uuid = dom.UUIDString()
            del dom
        return start_migration(spec, uuid, self._conns.get(spec.src), action_hook)

    def migrate(
        self, name: str = "lab1", bandwidth_mib_s: int = 50, timeout: float = 300.0, **kwargs: Any
    ) -> Outcome:
        """Blocking form of start_migration()."""
        return self.start_migration(name, bandwidth_mib_s, **kwargs).wait(timeout)


# ---------------------------------------------------------------------- CLI


def add_guest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", default="lab1")
    p.add_argument("--mem", type=int, default=512, help="guest RAM, MiB")
    p.add_argument("--fill", type=int, default=256, help="MiB filled non-zero at boot")
    p.add_argument("--ws", type=int, default=128, help="hot set, MiB")
    p.add_argument("--rate", type=int, default=0, help="MiB/s dirtied")
    p.add_argument("--disk", type=int, default=0, help="qcow2 disk as vda, MiB (0: none)")
    p.add_argument("--disk-rate", type=int, default=0, help="MiB/s random disk writes")
    p.add_argument("--disk-fill", type=int, default=None, help="MiB written before boot")
    p.add_argument(
        "--workload",
        default="",
        help="real programs instead of the dirtier "
        "(redis|sqlite|compress|sort|stress|cache; needs build.sh rp)",
    )
    p.add_argument("--wmb", type=int, default=0, help="MiB of the workload's own data")
    p.add_argument("--cache", type=int, default=0, help="MiB of page cache filled at boot")
    p.add_argument("--wopt", default="", help="workload variant (lab/guest/workload.sh)")


def add_migration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bandwidth", type=int, default=50, help="MiB/s")
    p.add_argument("--postcopy", action="store_true", help="VIR_MIGRATE_POSTCOPY")
    p.add_argument("--postcopy-bandwidth", type=int, default=None, help="bandwidth.postcopy")
    p.add_argument("--storage", action="store_true", help="NON_SHARED_DISK, migrate_disks=[vda]")
    p.add_argument("--auto-converge", action="store_true")
    p.add_argument(
        "--action",
        action="append",
        default=[],
        type=Action.parse,
        metavar="S:ACTION[=ARG]",
        help="e.g. 30:abort, 20:postcopy, 22:downtime=3000",
    )


def guest_spec(a: argparse.Namespace) -> GuestSpec:
    if a.workload:
        return WorkloadSpec(
            name=a.name,
            mem_mib=a.mem,
            fill_mib=0,
            ws_mib=0,
            workload=a.workload,
            wmb=a.wmb,
            cache_mib=a.cache,
            wopt=a.wopt,
        )
    return GuestSpec(
        name=a.name,
        mem_mib=a.mem,
        fill_mib=a.fill,
        ws_mib=a.ws,
        rate=a.rate,
        disk_mib=a.disk,
        disk_rate=a.disk_rate,
        disk_fill_mib=a.disk // 2 if a.disk_fill is None else a.disk_fill,
    )


def migration_spec(a: argparse.Namespace) -> MigrationSpec:
    return MigrationSpec(
        name=a.name,
        bandwidth_mib_s=a.bandwidth,
        postcopy=a.postcopy,
        postcopy_bandwidth_mib_s=a.postcopy_bandwidth,
        storage=a.storage,
        auto_converge=a.auto_converge,
        actions=tuple(a.action),
    )


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _cmd_up(a: argparse.Namespace) -> int:
    timings = Lab().up()
    print_json(
        {
            "up": "already up" if not timings else "started",
            **{k: round(v, 3) for k, v in timings.items()},
        }
    )
    return 0


def _cmd_down(a: argparse.Namespace) -> int:
    Lab().down()
    return 0


def _cmd_status(a: argparse.Namespace) -> int:
    status = Lab().status()
    print_json(status)
    return 0 if all(s["alive"] and s["listening"] for s in status.values()) else 1


def _cmd_boot(a: argparse.Namespace) -> int:
    start = time.monotonic()
    uuid = Lab().boot(guest_spec(a), timeout=a.boot_timeout)
    print_json({"uuid": uuid, "boot_s": round(time.monotonic() - start, 3)})
    return 0


def _cmd_migrate(a: argparse.Namespace) -> int:
    lab = Lab()
    handle = lab.start(migration_spec(a), action_hook=lambda r: print_json({"action": asdict(r)}))
    outcome = handle.wait()
    host = "B" if outcome.outcome == "completed" else "A"
    print_json({**asdict(outcome), "guest_check": lab.guest_check(host, a.name).as_dict()})
    return 0 if outcome.outcome != "failed" else 1


def _cmd_check(a: argparse.Namespace) -> int:
    check = Lab().guest_check(a.host, a.name)
    print_json(check.as_dict())
    return 0 if check.ok else 1


def _cmd_destroy(a: argparse.Namespace) -> int:
    Lab().destroy_all()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.labctl",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start both libvirt hosts (no-op when up)").set_defaults(fn=_cmd_up)
    sub.add_parser("down", help="stop everything the lab started").set_defaults(fn=_cmd_down)
    sub.add_parser("status", help="daemons and domains").set_defaults(fn=_cmd_status)
    sub.add_parser("destroy", help="destroy all domains on both hosts").set_defaults(
        fn=_cmd_destroy
    )
    p = sub.add_parser("boot", help="boot a guest on A, wait until its memory is filled")
    add_guest_args(p)
    p.add_argument("--boot-timeout", type=float, default=120.0, help="s until filled/ready")
    p.set_defaults(fn=_cmd_boot)
    p = sub.add_parser("migrate", help="migrate a running guest A -> B")
    p.add_argument("--name", default="lab1")
    add_migration_args(p)
    p.set_defaults(fn=_cmd_migrate)
    p = sub.add_parser("check", help="guest health from a host's serial log")
    p.add_argument("--host", default="B", choices=sorted(HOSTS))
    p.add_argument("--name", default="lab1")
    p.set_defaults(fn=_cmd_check)
    args = parser.parse_args(argv)
    try:
        rc: int = args.fn(args)
        return rc
    except LabError as err:
        print(f"labctl: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
