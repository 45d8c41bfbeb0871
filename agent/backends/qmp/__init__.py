"""The QMP backend: QEMU without libvirt, as Proxmox VE runs it.

``watcher`` and ``jobs`` are pure (no asyncio, no clock, no qemu.qmp). The I/O edge talks
to each guest's QMP socket with qemu.qmp, one short connection per command batch:
``backend`` (the scan, ``QmpBackend``), ``session`` (a session on one monitor),
``controls`` and ``preflight``; ``sockets`` (which sockets, the QEMU behind each) and
``publish`` (observations and the trace) do not speak QMP.
"""
