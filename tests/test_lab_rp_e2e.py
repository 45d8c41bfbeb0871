"""A real-program lab guest (lab/guest/workload.sh) boots, runs its program, and keeps
running it on the destination after a real live migration.

Needs the lab (``make test`` brings it up) and builds the rp initramfs itself with
``lab/guest/build.sh rp`` (Debian packages fetched with apt-get download, ~10 MB once).
Runs unless MIGWATCH_SKIP_LAB=1, and then it is reported as skipped with that reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("MIGWATCH_SKIP_LAB") == "1":
    pytest.skip(
        "MIGWATCH_SKIP_LAB=1: the real-libvirt lab tests were NOT run", allow_module_level=True
    )

from lab import guest as guestmod
from lab.guest import WorkloadSpec
from lab.labctl import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[1]
NAME = "t-rp-zstd"
_STATUS = re.compile(r"workload: t=[\d.]+s kind=compress rounds=(\d+) verify=(\w+)")


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab()
    lab.up()
    subprocess.run(["bash", str(REPO / "lab" / "guest" / "build.sh"), "rp"], check=True)
    yield lab


def _rounds(host: str) -> list[int]:
    return [
        int(m.group(1))
        for line in guestmod.serial_lines(host, NAME)
        if (m := _STATUS.search(line)) and m.group(2) == "ok"
    ]


def test_zstd_guest_keeps_compressing_after_migration(lab: Lab) -> None:
    """zstd from the Debian package runs in the guest before the migration and, after it,
    on B finishes more rounds than it had on A, with its page cache intact (verify=ok)."""
    spec = WorkloadSpec(
        name=NAME, mem_mib=768, workload="compress", wmb=16, cache_mib=64, wopt="zstd"
    )
    try:
        lab.boot(spec, timeout=300)
        deadline = time.monotonic() + 120
        while not _rounds("A") or max(_rounds("A")) < 1:
            assert time.monotonic() < deadline, guestmod.serial_lines("A", NAME)[-10:]
            time.sleep(0.5)
        outcome = lab.migrate(NAME, bandwidth_mib_s=150, timeout=180)
        assert outcome.outcome == "completed", outcome
        before = max(_rounds("A"))
        deadline = time.monotonic() + 120
        while not _rounds("B") or max(_rounds("B")) <= before:
            assert time.monotonic() < deadline, guestmod.serial_lines("B", NAME)[-10:]
            time.sleep(0.5)
        check = lab.guest_check("B", NAME, wait_s=20)
        assert check.ok, check.as_dict()
    finally:
        lab.destroy(NAME)
