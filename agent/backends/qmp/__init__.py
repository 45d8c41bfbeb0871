"""The QMP backend: QEMU without libvirt, as Proxmox VE runs it.

``watcher`` and ``jobs`` are pure (no asyncio, no clock, no qemu.qmp); ``backend`` is the
thin I/O edge that talks to each guest's QMP socket with qemu.qmp, one short connection
per command batch.
"""
