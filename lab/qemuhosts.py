"""The bare-QEMU lab: two "hosts" that are directories, each with Proxmox-style sockets.

No libvirt: each guest is a ``qemu-system-x86_64 -accel tcg`` process started here, with
its QMP monitor at ``<host dir>/<vmid>.qmp`` (Proxmox: ``/var/run/qemu-server/<vmid>.qmp``)
and its pid in ``<vmid>.pid``. A migration starts the destination with ``-incoming
defer``, then ``migrate-incoming`` on a 127.0.0.1 port chosen free at run time, and the
source's ``migrate``; it is polled every second as Proxmox's migration task does, through
``QmpCtl``: one QMP connection per command, like ``qm``. A guest with a disk
(``GuestSpec.disk_mib``: a qcow2 per host, ``drive-virtio0``) migrates with its storage as
Proxmox does it (``PVE::QemuMigrate`` with local disks): the destination exports its empty
disk over NBD (``nbd-server-start``, ``block-export-add``), the source ``drive-mirror``s
into it (``mode existing``, ``format nbd``, job id = the drive) until the mirror is ready,
then ``migrate``s the RAM; after the RAM has gone, the mirror is cancelled (its copy is
complete) and the NBD server stopped. Every process started here is in
its own process group and is killed by ``QemuLab.stop`` (tests call it in a finally).

The guest is lab/guest (build.sh): the same kernel, initramfs and dirtier as the libvirt
lab, with the same kernel command line (``GuestSpec.cmdline``, ``pti=on`` included).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from lab.guest import GuestSpec, guest_dir, make_disk
from lab.hosts import LabError

QEMU = "qemu-system-x86_64"
_REPO = Path(__file__).resolve().parent.parent


def ensure_guest() -> Path:
    """The built lab guest; builds it (lab/guest/build.sh) on a machine that has none."""
    gdir = guest_dir()
    if not (gdir / "build.stamp").is_file():
        subprocess.run(["bash", str(_REPO / "lab" / "guest" / "build.sh")], check=True)
    for name in ("vmlinux", "initramfs.cpio.gz"):
        if not (gdir / name).is_file():
            raise LabError(f"{gdir / name} missing after lab/guest/build.sh")
    return gdir


def _private_copy(gdir: Path, into: Path) -> Path:
    """The guest's kernel and initramfs under our own directory (hard links where the
    filesystem allows): the libvirt lab's ``stop_all`` kills every QEMU whose command line
    names the shared guest directory, and ours are not its to kill."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinux", "initramfs.cpio.gz"):
        target = into / name
        if not target.exists():
            try:
                os.link(gdir / name, target)
            except OSError:
                shutil.copyfile(gdir / name, target)
    return into


def dies_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGKILL when the thread that started it dies (Linux's
    parent-death signal, set by util-linux's ``setpriv``, which is essential in Debian): a
    test runner killed outright (no finally, no atexit) leaves no QEMU or agent behind."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class QmpCtl:
    """Another QMP client, as Proxmox's ``qm`` and migration task are: it connects for each
    command and records how long each connection waited for QEMU's greeting (the socket
    serves one client at a time)."""

    timeout_s: float = 30.0
    waits: list[float] = field(default_factory=list)
    # (socket, command, wait) of every call, to tell the migration polls from the calls to
    # a destination QEMU that has only just started (whose greeting comes when it is up).
    calls: list[tuple[str, str, float]] = field(default_factory=list)

    async def __call__(self, path: Path, command: str, **args: Any) -> Any:
        client = QMPClient("lab-qm")
        began = time.monotonic()
        await asyncio.wait_for(client.connect(str(path)), self.timeout_s)
        self.waits.append(time.monotonic() - began)
        self.calls.append((path.name, command, self.waits[-1]))
        try:
            return await asyncio.wait_for(client.execute(command, args or None), self.timeout_s)
        finally:
            await client.disconnect()


@dataclass
class Vm:
    """One QEMU process of a guest on one host."""

    vmid: str
    host_dir: Path
    spec: GuestSpec
    uuid: str
    proc: subprocess.Popen[bytes]

    @property
    def qmp(self) -> Path:
        return self.host_dir / f"{self.vmid}.qmp"

    @property
    def serial(self) -> Path:
        return self.host_dir / f"{self.vmid}.serial"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group: the QEMU process dies at once (no clean shutdown)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        # QEMU leaves its socket files behind when killed, as on a crash.
        self.qmp.unlink(missing_ok=True)
        (self.host_dir / f"{self.vmid}.migwatch.qmp").unlink(missing_ok=True)


@dataclass(frozen=True)
class Outcome:
    status: str  # query-migrate's final status: completed, failed, cancelled
    duration_s: float  # from the migrate command until the status was seen final
    reply: dict[str, Any]


class QemuLab:
    """Guests on two host directories, ``<root>/A`` and ``<root>/B``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hosts = {h: root / h for h in ("A", "B")}
        for d in self.hosts.values():
            d.mkdir(parents=True, exist_ok=True)
        self.vms: list[Vm] = []
        self.ctl = QmpCtl()
        self._gdir = _private_copy(ensure_guest(), root / "guest")

    def start(
        self,
        host: str,
        vmid: str,
        spec: GuestSpec,
        uuid: str | None = None,
        *,
        incoming: bool = False,
        dedicated: bool = False,
    ) -> Vm:
        """Start the guest's QEMU on ``host``; ``incoming``: ``-incoming defer``;
        ``dedicated``: a second monitor for the agent, ``<vmid>.migwatch.qmp`` (Proxmox:
        ``args: -qmp unix:/var/run/qemu-server/<vmid>.migwatch.qmp,server=on,wait=off``)."""
        hdir = self.hosts[host]
        vm_uuid = uuid or str(uuidlib.uuid4())
        qmp, serial = hdir / f"{vmid}.qmp", hdir / f"{vmid}.serial"
        qmp.unlink(missing_ok=True)
        serial.unlink(missing_ok=True)
        argv = [
            QEMU, "-accel", "tcg", "-machine", "pc", "-nodefaults", "-display", "none",
            "-m", str(spec.mem_mib), "-smp", str(spec.vcpus),
            "-uuid", vm_uuid, "-name", spec.name,
            "-kernel", str(self._gdir / "vmlinux"),
            "-initrd", str(self._gdir / "initramfs.cpio.gz"),
            "-append", spec.cmdline(),
            "-serial", f"file:{serial}",
            "-qmp", f"unix:{qmp},server=on,wait=off",
            "-pidfile", str(hdir / f"{vmid}.pid"),
            # As Proxmox gives every guest (id balloon0, statistics every 2 s): the guest's
            # free memory, which the agent reads with ``qom-get ... guest-stats``.
            "-device", "virtio-balloon-pci,id=balloon0,guest-stats-polling-interval=2",
        ]  # fmt: skip
        if spec.disk_mib:
            image = self._disk(host, vmid, spec, fill=not incoming)
            argv += [
                "-drive", f"file={image},if=none,id=drive-virtio0,format=qcow2",
                "-device", "virtio-blk-pci,drive=drive-virtio0,id=virtio0",
            ]  # fmt: skip
        if dedicated:
            own = hdir / f"{vmid}.migwatch.qmp"
            own.unlink(missing_ok=True)
            argv += ["-qmp", f"unix:{own},server=on,wait=off"]
        if incoming:
            argv += ["-incoming", "defer"]
        with (hdir / f"{vmid}.log").open("ab") as err:  # the child keeps its own copy
            proc = subprocess.Popen(
                dies_with_parent(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        vm = Vm(vmid, hdir, spec, vm_uuid, proc)
        self.vms.append(vm)
        deadline = time.monotonic() + 20
        while not qmp.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (hdir / f"{vmid}.log").read_text(errors="replace")[-1500:]
                raise LabError(f"QEMU for {vmid} on {host} did not start: {tail}")
            time.sleep(0.02)
        return vm

    def _disk(self, host: str, vmid: str, spec: GuestSpec, *, fill: bool) -> Path:
        """A fresh qcow2 for the guest on ``host``; ``fill``: ``disk_fill_mib`` written with
        data first (the source's), else empty (the destination's, the mirror's target)."""
        image = self.hosts[host] / f"{vmid}-disk0.qcow2"
        make_disk(image, spec, fill=fill)
        return image

    def boot(
        self, host: str, vmid: str, spec: GuestSpec, timeout_s: float = 60, dedicated: bool = False
    ) -> Vm:
        """Start a guest and wait until its dirtier has filled its memory."""
        vm = self.start(host, vmid, spec, dedicated=dedicated)
        deadline = time.monotonic() + timeout_s
        while "dirtier: filled" not in _read(vm.serial):
            if (
                not vm.alive()
                or time.monotonic() > deadline
                or "dirtier: exited" in _read(vm.serial)
            ):
                raise LabError(f"guest {vmid} did not boot:\n{_read(vm.serial)[-2000:]}")
            time.sleep(0.1)
        return vm

    async def start_migration(
        self,
        src: Vm,
        dst_host: str,
        *,
        bandwidth_mib_s: int | None,
        postcopy: bool = False,
        auto_converge: bool = False,
        downtime_ms: int | None = None,
    ) -> Vm:
        """Start the destination QEMU and the migration, as Proxmox does; returns the
        destination."""
        dedicated = (src.host_dir / f"{src.vmid}.migwatch.qmp").exists()
        dst = await asyncio.to_thread(
            functools.partial(
                self.start, dst_host, src.vmid, src.spec, src.uuid,
                incoming=True, dedicated=dedicated,
            )
        )  # fmt: skip
        port = free_port()
        caps = [{"capability": "postcopy-ram", "state": postcopy}]
        await self.ctl(dst.qmp, "migrate-set-capabilities", capabilities=caps)
        await self.ctl(dst.qmp, "migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        caps.append({"capability": "auto-converge", "state": auto_converge})
        await self.ctl(src.qmp, "migrate-set-capabilities", capabilities=caps)
        params: dict[str, Any] = {}
        if bandwidth_mib_s:
            params["max-bandwidth"] = bandwidth_mib_s << 20
        if downtime_ms:
            params["downtime-limit"] = downtime_ms
        if params:
            await self.ctl(src.qmp, "migrate-set-parameters", **params)
        if src.spec.disk_mib:
            # After the parameters (Proxmox sets them just before `migrate`; QEMU does not
            # mind the order), so the limits the agent reads in the disk phase are the
            # migration's.
            await self._mirror_disk(src, dst, bandwidth_mib_s)
        await self.ctl(src.qmp, "migrate", uri=f"tcp:127.0.0.1:{port}")
        return dst

    async def _mirror_disk(self, src: Vm, dst: Vm, bandwidth_mib_s: int | None) -> None:
        """Proxmox's storage phase: mirror the source's disk into the destination's NBD
        export until the mirror is ready (every block copied; new writes keep flowing)."""
        nbd = free_port()
        await self.ctl(
            dst.qmp,
            "nbd-server-start",
            addr={"type": "inet", "data": {"host": "127.0.0.1", "port": str(nbd)}},
        )
        await self.ctl(
            dst.qmp, "nbd-server-add", device="drive-virtio0", name="drive-virtio0", writable=True
        )
        args: dict[str, Any] = {
            "device": "drive-virtio0", "mode": "existing", "sync": "full", "format": "nbd",
            "target": f"nbd:127.0.0.1:{nbd}:exportname=drive-virtio0", "auto-dismiss": False,
        }  # fmt: skip
        if bandwidth_mib_s:
            args["speed"] = bandwidth_mib_s << 20
        await self.ctl(src.qmp, "drive-mirror", **args)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            jobs = await self.ctl(src.qmp, "query-block-jobs")
            if jobs and all(j.get("ready") for j in jobs):
                return
            if not jobs or any(j.get("error") for j in jobs):
                raise LabError(f"drive-mirror of {src.vmid} ended before it was ready: {jobs}")
            await asyncio.sleep(0.5)
        raise LabError(f"drive-mirror of {src.vmid} not ready after 300 s")

    async def finish_storage(self, src: Vm, dst: Vm) -> None:
        """After the RAM has gone: cancel the (complete) mirror, stop the NBD server."""
        with contextlib.suppress(Exception):
            await self.ctl(src.qmp, "block-job-cancel", device="drive-virtio0")
        with contextlib.suppress(Exception):
            await self.ctl(dst.qmp, "nbd-server-stop")

    async def wait_migration(self, src: Vm, timeout_s: float, interval_s: float = 1.0) -> Outcome:
        """Poll ``query-migrate`` every ``interval_s`` (Proxmox: 1 s) until it ends."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            if not src.alive():
                return Outcome("gone", time.monotonic() - began, {})
            try:
                reply = await self.ctl(src.qmp, "query-migrate")
            except (OSError, EOFError, Exception) as exc:  # the source died meanwhile
                if src.alive():
                    raise
                return Outcome(f"gone ({exc.__class__.__name__})", time.monotonic() - began, {})
            if reply.get("status") in ("completed", "failed", "cancelled"):
                return Outcome(str(reply["status"]), time.monotonic() - began, dict(reply))
            await asyncio.sleep(interval_s)
        raise LabError(f"migration of {src.vmid} still running after {timeout_s}s")

    def stop(self) -> None:
        """Kill every QEMU this lab started (their process groups)."""
        for vm in self.vms:
            vm.kill()
        self.vms.clear()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# -- recording a trace with the agent's own recorder ------------------------------------
async def record(
    out: Path,
    spec: GuestSpec,
    *,
    bandwidth_mib_s: int,
    auto_converge: bool = False,
    preflight_periods: tuple[int, ...] = (1, 2, 4, 8, 16),
) -> Path:
    """Migrate one guest A -> B while a ``QmpBackend`` records it (the agent's recorder, so
    the trace is what ``--record-dir`` writes), after one pre-flight ladder; then add what
    only the lab knows (the guest's parameters, the migrate call's duration and a guest
    check on the destination) as the libvirt lab's traces have them."""
    import json
    import tempfile

    from migwatch.agent.backends.qmp.backend import QmpBackend
    from migwatch.agent.backends.recorder import TraceRecorder

    with tempfile.TemporaryDirectory(prefix="mwq-rec-") as tmp:
        lab = QemuLab(Path(tmp) / "hosts")
        rec_dir = Path(tmp) / "traces"
        backend = QmpBackend(
            str(lab.hosts["A"] / "*.qmp"), sample_interval_s=0.25, scan_interval_s=0.5,
            host_name="qmphost-A", recorder=TraceRecorder(rec_dir),
            preflight_interval_s=3600, preflight_periods=preflight_periods,
        )  # fmt: skip
        finals: list[str] = []
        # Booted first: a ladder taken while the guest boots and fills its memory
        # measures the fill, not the workload.
        task: asyncio.Task[None] | None = None
        try:
            vm = await asyncio.to_thread(lab.boot, "A", spec.name.removeprefix("vm"), spec)
            task = asyncio.create_task(
                backend.run(
                    lambda obs: finals.append(obs.phase.name) if obs.phase.terminal else None,
                    lambda _state, _msg: None,
                )
            )
            deadline = time.monotonic() + sum(preflight_periods) + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    facts = await backend.describe(vm.uuid)
                    if facts.preflight is not None and len(facts.preflight.rates) == len(
                        preflight_periods
                    ):
                        break
                await asyncio.sleep(0.5)
            began = time.monotonic()
            dst = await lab.start_migration(
                vm, "B", bandwidth_mib_s=bandwidth_mib_s, auto_converge=auto_converge
            )
            outcome = await lab.wait_migration(vm, 600)
            duration = time.monotonic() - began
            if spec.disk_mib:
                await lab.finish_storage(vm, dst)
            while not finals and time.monotonic() - began < duration + 10:
                await asyncio.sleep(0.1)
            healthy = await asyncio.to_thread(_healthy, dst)
        finally:
            try:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await backend.close()
            finally:
                lab.stop()
        (path,) = rec_dir.glob("*.jsonl")
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for line in lines:
            if line["type"] == "meta":
                line["guest"] = spec.trace_dict()
                line["scenario"] = out.stem
                line["preflight_periods_s"] = list(preflight_periods)
                line["disk_fill_mib"] = spec.disk_fill_mib if spec.disk_mib else None
                if auto_converge:
                    line["params"]["auto_converge"] = True
            if line["type"] == "result":
                line["duration_s"] = round(duration, 3)
                line["guest_check"] = {"host": "B", "ok": healthy}
                line["qmp_final"] = outcome.reply
        out.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return out


def _healthy(vm: Vm, wait_s: float = 3.0) -> bool:
    """No panic or VERIFY FAIL on the guest's console, and a new dirtier line within ``wait_s``."""
    before = _read(vm.serial).count("dirtier: t=")
    time.sleep(wait_s)
    text = _read(vm.serial)
    return (
        text.count("dirtier: t=") > before
        and "VERIFY FAIL" not in text
        and "Kernel panic" not in text
    )


def main() -> None:
    """``python -m lab.qemuhosts record OUT.jsonl MEM FILL WS RATE BANDWIDTH [ac] [disk=MIB]``
    (``disk=MIB``: a local disk, half of it written, migrated first by drive-mirror)."""
    import sys

    args = sys.argv[1:]
    if len(args) < 7 or args[0] != "record":
        raise SystemExit(main.__doc__)
    out = Path(args[1])
    mem, fill, ws, rate, bw = (int(a) for a in args[2:7])
    disk = next((int(a.removeprefix("disk=")) for a in args[7:] if a.startswith("disk=")), 0)
    spec = GuestSpec(
        disk_mib=disk,
        disk_fill_mib=disk // 2,
        disk_rate=1 if disk else 0,
        name="vm" + out.stem.replace("-", ""),
        mem_mib=mem,
        fill_mib=fill,
        ws_mib=ws,
        rate=rate,
        report_s=1,
    )
    print(asyncio.run(record(out, spec, bandwidth_mib_s=bw, auto_converge="ac" in args[7:])))


if __name__ == "__main__":
    main()
