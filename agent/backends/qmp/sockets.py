"""Which QMP sockets to watch, and the QEMU process behind each one. No QMP here.

One socket per guest (``--qmp-sockets``, default Proxmox's ``/var/run/qemu-server/*.qmp``),
the guest's id from the file name; a guest with a monitor of the agent's own
(``<vmid>.migwatch.qmp``) is watched through that one. The process behind a socket is
found from the socket's peer credentials (or Proxmox's pid file) and read in ``/proc``
for its resident memory.

Apart from the sessions (``session``) because none of this speaks QMP: file names, a glob,
``SO_PEERCRED`` and ``/proc``, each testable without a QEMU.
"""

from __future__ import annotations

import glob
import socket
import struct
from pathlib import Path

#: A VM's own monitor for the agent (Proxmox: ``args: -qmp unix:…/<vmid>.migwatch.qmp,…``).
DEDICATED_SUFFIX = ".migwatch.qmp"


def vmid_of(path: Path) -> str:
    """The guest id of a socket: the file name before ``.qmp`` or ``.migwatch.qmp``."""
    return path.name.removesuffix(DEDICATED_SUFFIX).removesuffix(".qmp")


def choose_sockets(paths: set[Path]) -> set[Path]:
    """One socket per guest: its dedicated monitor where it has one, else the shared one."""
    dedicated = {vmid_of(p) for p in paths if p.name.endswith(DEDICATED_SUFFIX)}
    return {p for p in paths if p.name.endswith(DEDICATED_SUFFIX) or vmid_of(p) not in dedicated}


def find_sockets(pattern: str) -> set[Path]:
    """The sockets matching ``pattern`` now, one per guest (``choose_sockets``)."""
    return choose_sockets({Path(p) for p in glob.glob(pattern)})


def peer_pid(raw: socket.socket) -> int | None:
    """The QEMU process's pid from the socket's peer credentials (Linux SO_PEERCRED)."""
    try:
        pid, _uid, _gid = struct.unpack(
            "3i", raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        )
    except (OSError, AttributeError):
        return None
    return pid if pid > 0 else None


def pid_file(path: Path) -> int | None:
    """Proxmox's ``<vmid>.pid`` beside the socket."""
    try:
        return int(path.with_suffix(".pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def resident_bytes(pid: int | None) -> int | None:
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
