"""The lab guest: its parameters, domain XML, disk image and serial console.

The guest is a Debian kernel (ELF vmlinux, booted through PVH) with a busybox
initramfs running lab/guest/dirtier.c; see lab/guest/build.sh. A guest with a
`WorkloadSpec` boots the rp initramfs instead (`build.sh rp`) and runs real programs
from Debian packages (lab/guest/workload.sh). It runs under
TCG (`<domain type='qemu'>`): KVM here is kvm_pvm and cannot run a stock
kernel (NOTES.md). Its kernel command line carries `pti=on`, the workaround for
QEMU 7.2 TCG losing dirty pages during migration (Pitfall 7).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from lab.hosts import HOSTS, LabError, host_dirs, state_dir

# Lines the dirtier prints (lab/guest/dirtier.c).
_FILLED = re.compile(r"dirtier: filled (\d+) MiB in ([\d.]+)s")
_STATUS = re.compile(r"dirtier: t=([\d.]+)s dirtied=(\d+) pages .* verify=(\w+)")
# The same two for a real-program guest (lab/guest/workload.sh).
_READY = re.compile(r"workload: ready (\S+) .* in ([\d.]+)s")
_WSTATUS = re.compile(r"workload: t=([\d.]+)s kind=\S+ rounds=(\d+) verify=(\w+)")
# Anything that means the guest is not healthy: a kernel oops/panic (the
# Pitfall 7 symptom), the dirtier's own memory check, or the dirtier dying.
_PANIC = re.compile(
    r"Kernel panic|general protection fault|BUG: |Oops: |dirtier: exited|workload: FAIL"
)
_VERIFY_FAIL = re.compile(r"VERIFY FAIL")


def guest_dir() -> Path:
    """Build outputs of lab/guest/build.sh."""
    return state_dir() / "guest"


@dataclass(frozen=True)
class GuestSpec:
    """What the lab guest does. Sizes in MiB, rates in MiB/s."""

    name: str = "lab1"
    mem_mib: int = 512
    fill_mib: int = 256
    ws_mib: int = 128
    rate: int = 0
    disk_mib: int = 0
    disk_rate: int = 0
    # MiB of the disk written on the host before boot (non-zero, allocated data
    # that a storage migration must copy).
    disk_fill_mib: int = 0
    report_s: int = 2
    vcpus: int = 1

    def cmdline(self) -> str:
        parts = [
            "console=ttyS0",
            "quiet",
            "panic=-1",
            "pti=on",  # Pitfall 7: without it the destination guest panics
            f"lab.mb={self.ws_mib}",
            f"lab.fill={self.fill_mib}",
            f"lab.rate={self.rate}",
            f"lab.report={self.report_s}",
            "lab.verify=1",
        ]
        if self.disk_mib:
            parts.append(f"lab.diskrate={self.disk_rate}")
        return " ".join(parts)

    def trace_dict(self) -> dict[str, object]:
        """The `guest` object of a trace's meta line (same keys as the shared traces)."""
        out: dict[str, object] = {
            "mem_mib": self.mem_mib,
            "ws_mib": self.ws_mib,
            "fill_mib": self.fill_mib,
            "rate": self.rate,
        }
        if self.disk_mib:
            out["disk_mib"] = self.disk_mib
            out["disk_rate"] = self.disk_rate
        out["name"] = self.name
        return out


@dataclass(frozen=True)
class WorkloadSpec(GuestSpec):
    """A real-program guest (lab/guest/workload.sh, booted from the rp initramfs): the
    kind (redis, sqlite, compress, sort, stress, cache), MiB of its own data, MiB of page
    cache filled at boot, and its variant. The dirtier's fields are unused."""

    workload: str = "cache"
    wmb: int = 0
    cache_mib: int = 0
    wopt: str = ""

    def cmdline(self) -> str:
        parts = [
            "console=ttyS0",
            "quiet",
            "panic=-1",
            "pti=on",  # Pitfall 7
            # A loaded host can make TCG miss the kernel's early timer check
            # ("IO-APIC + timer doesn't work!" panic at boot, seen once here).
            "no_timer_check",
            f"lab.workload={self.workload}",
            f"lab.wmb={self.wmb}",
            f"lab.cache={self.cache_mib}",
        ]
        if self.wopt:
            parts.append(f"lab.wopt={self.wopt}")
        parts.append(f"lab.report={self.report_s}")
        return " ".join(parts)

    def trace_dict(self) -> dict[str, object]:
        """No hot set or rate is known: real programs dirty what they dirty."""
        return {
            "mem_mib": self.mem_mib,
            "workload": self.workload,
            "wmb": self.wmb,
            "cache_mib": self.cache_mib,
            "wopt": self.wopt or None,
            "name": self.name,
        }


def domain_xml(spec: GuestSpec) -> str:
    """Transient TCG domain: no NIC, serial console to a file on the host it
    runs on (the path resolves in that host's namespace), optional virtio disk."""
    gdir = guest_dir()
    disk = ""
    if spec.disk_mib:
        disk = f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/{escape(spec.name)}.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
    serial = f"/var/log/libvirt/qemu/{escape(spec.name)}-serial.log"
    return f"""<domain type='qemu'>
  <name>{escape(spec.name)}</name>
  <memory unit='MiB'>{spec.mem_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(gdir / "vmlinux"))}</kernel>
    <initrd>{escape(str(gdir / initrd_name(spec)))}</initrd>
    <cmdline>{escape(spec.cmdline())}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{disk}
    <serial type='file'>
      <source path='{serial}'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='virtio'>
      <stats period='2'/>
    </memballoon>
  </devices>
</domain>
"""


def initrd_name(spec: GuestSpec) -> str:
    return "initramfs-rp.cpio.gz" if isinstance(spec, WorkloadSpec) else "initramfs.cpio.gz"


def check_built(spec: GuestSpec | None = None) -> None:
    initrd = initrd_name(spec) if spec is not None else "initramfs.cpio.gz"
    for name in ("vmlinux", initrd):
        if not (guest_dir() / name).is_file():
            how = (
                "lab/guest/build.sh rp" if name.startswith("initramfs-rp") else "lab/guest/build.sh"
            )
            raise LabError(f"{guest_dir() / name} missing: run {how} (make lab-guest)")


def reset_serial_logs(name: str) -> None:
    """QEMU opens serial logs in append mode on both ends (Pitfall 13): start
    each run with none, so a log shows only this run."""
    for host in HOSTS:
        host_dirs(host).serial_log(name).unlink(missing_ok=True)


def prepare_disks(spec: GuestSpec) -> None:
    """qcow2 on A, partly written with data; an empty one of the same size on B
    so that the storage migration has a target (libvirt's pre-creation needs a
    storage pool, which the lab does not define)."""
    for host in HOSTS:
        host_dirs(host).image(spec.name).unlink(missing_ok=True)
    if not spec.disk_mib:
        return
    for host in HOSTS:
        make_disk(host_dirs(host).image(spec.name), spec, fill=host == "A")


def make_disk(image: Path, spec: GuestSpec, *, fill: bool) -> None:
    """A fresh qcow2 of ``spec.disk_mib`` at ``image``; ``fill``: its first
    ``spec.disk_fill_mib`` written with non-zero data (a source's disk), else empty (a
    migration's target). Also the bare-QEMU lab's disks (lab/qemuhosts.py)."""
    image.unlink(missing_ok=True)
    _run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), f"{spec.disk_mib}M"])
    if fill and spec.disk_fill_mib:
        _run(
            [
                "qemu-io",
                "-f",
                "qcow2",
                "-c",
                f"write -q -P 0x5a 0 {spec.disk_fill_mib}M",
                str(image),
            ]
        )


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise LabError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def serial_lines(host: str, name: str) -> list[str]:
    try:
        text = host_dirs(host).serial_log(name).read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line.rstrip("\r") for line in text.splitlines()]


def status_lines(host: str, name: str) -> list[str]:
    return [
        line for line in serial_lines(host, name) if _STATUS.search(line) or _WSTATUS.search(line)
    ]


def dirtier_tail(host: str, name: str, n: int = 6) -> list[str]:
    """The last `n` dirtier (or workload) lines of a host's console (a result's `serial_tail`)."""
    return [
        line for line in serial_lines(host, name) if line.startswith(("dirtier:", "workload:"))
    ][-n:]


def wait_filled(
    host: str, name: str, timeout: float, alive: Callable[[], bool] = lambda: True
) -> float:
    """Block until the dirtier reports its fill; returns the fill time it printed.
    `alive` is polled too, so a guest destroyed meanwhile (a panic with
    on_reboot=destroy, or another lab user's destroy_all) fails at once."""
    deadline = time.monotonic() + timeout
    next_alive_check = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        if time.monotonic() >= next_alive_check:
            next_alive_check += 0.5
            if not alive():
                raise LabError(f"guest {name} on {host} stopped while booting")
        lines = serial_lines(host, name)
        for line in lines:
            if m := _FILLED.search(line) or _READY.search(line):
                return float(m.group(2))
        if any(_PANIC.search(line) for line in lines):
            raise LabError(f"guest {name} on {host} failed to boot:\n" + "\n".join(lines[-30:]))
        time.sleep(0.05)
    raise LabError(
        f"guest {name} on {host}: no 'dirtier: filled' / 'workload: ready' line after {timeout}s"
    )


@dataclass
class GuestCheck:
    """Whether the guest is healthy on `host`: no panic, no VERIFY FAIL, and the
    dirtier still makes progress (a new status line appeared during the check)."""

    host: str
    panic: bool
    verify_fail: bool
    progress_after: bool
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = not self.panic and not self.verify_fail and self.progress_after

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "panic": self.panic,
            "verify_fail": self.verify_fail,
            "progress_after": self.progress_after,
            "ok": self.ok,
        }


def guest_check(host: str, name: str, wait_s: float | None = None, report_s: int = 2) -> GuestCheck:
    """Scan `host`'s serial log for panic / VERIFY FAIL and wait (up to
    `wait_s`, default 2 report periods + 1 s) for a new dirtier status line."""
    wait = 2 * report_s + 1.0 if wait_s is None else wait_s
    before = len(status_lines(host, name))
    deadline = time.monotonic() + wait
    progress = False
    while True:
        if len(status_lines(host, name)) > before:
            progress = True
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    lines = serial_lines(host, name)
    return GuestCheck(
        host=host,
        panic=any(_PANIC.search(line) for line in lines),
        verify_fail=any(_VERIFY_FAIL.search(line) for line in lines)
        or any(
            m.group(3) != "ok"
            for line in lines
            if (m := _STATUS.search(line) or _WSTATUS.search(line))
        ),
        progress_after=progress,
    )
