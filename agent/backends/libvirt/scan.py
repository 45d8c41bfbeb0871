"""Blocking reads of libvirt's domains: finding jobs, a domain's limits, state and end facts.

Every function here blocks (``jobStats()`` is ~1 ms but was seen at ~1 s once) and runs in
a worker thread; each returns a named record, never a bare tuple. Domain objects live only
inside these calls, so closing the connection really closes it (NOTES.md, Pitfall 10).
"""

from __future__ import annotations

import contextlib
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

import libvirt
from migwatch.agent.backends.jobstats import job_over, no_job
from migwatch.agent.backends.libvirt.connection import NO_DOMAIN, OPERATION_UNSUPPORTED, code
from migwatch.agent.backends.libvirt.watcher import DomainState, is_outgoing_migration
from migwatch.agent.model import MIB, Limits

log = logging.getLogger(__name__)

_UNLIMITED_MIB_S = 1 << 40  # libvirt reports "no limit" as a huge MiB/s value


class FoundJob(NamedTuple):
    """A domain with a migration job, as one scan found it."""

    uuid: str
    name: str
    outgoing: bool  # False: incoming (the destination has no job statistics)
    stats: dict[str, Any]  # jobStats() of an outgoing job; {} for incoming
    memory_bytes: int  # guest RAM (0 for incoming)
    resident_bytes: int | None  # the QEMU process's rss, read when the job is first found
    # Wall time right after jobStats() returned: the job's start is this less its elapsed
    # time. Not the time the whole scan returned: on a busy host the rest of the scan (other
    # domains, memoryStats) and the hop back to the event loop took seconds, and a start
    # derived that late gave a restarted agent a different migration id for the same job.
    read_at: float = 0.0
    # The guest's own count of free memory (balloon statistics, ``unused``), read with rss.
    free_bytes: int | None = None


class Described(NamedTuple):
    """What ``Backend.describe`` needs of a running domain."""

    uuid: str
    name: str
    domain_id: int
    memory_bytes: int
    disk_bytes: int
    limits: Limits
    migrating: bool
    resident_bytes: int | None
    free_bytes: int | None = None  # balloon statistics' ``unused``, if the guest reports it


class EndFacts(NamedTuple):
    """What libvirt kept of a job that left ``jobStats()``."""

    completed: dict[str, Any]  # jobStats(COMPLETED); {} when the domain is gone
    state: DomainState | None  # None: the domain is gone
    running: bool = False  # a migration job still runs (only ``settle_facts`` says)


def memory_facts(dom: Any) -> tuple[int | None, int | None]:
    """(resident, free) bytes from one ``virDomainMemoryStats``, each None when unknown.

    ``rss``, the guest QEMU's resident memory, needs no balloon driver: never-written guest
    pages are not resident, so it bounds the RAM pass 1 must send as non-zero pages from
    above. ``unused``, the guest's free memory, comes only from a guest with the balloon
    driver and a statistics period (nova's ``mem_stats_period_seconds``, on by default;
    KubeVirt and Proxmox attach the balloon too): a never-written page is a free one, so it
    bounds the zero pages from above (``passmodel.ResidentBound``)."""
    try:
        stats = dom.memoryStats()
    except libvirt.libvirtError as exc:
        log.debug("memoryStats of %s failed: %s", dom.name(), exc.get_error_message())
        return None, None

    def kib(key: str) -> int | None:
        v = stats.get(key)
        return int(v) * 1024 if isinstance(v, int) and v > 0 else None

    return kib("rss"), kib("unused")


def scan_jobs(
    conn: Any, known: frozenset[str] = frozenset(), clock: Callable[[], float] = time.time
) -> list[FoundJob]:
    """Every active domain with a migration job. The RAM size lets the ETA cover a disk
    mirror, during which the memory counters are all zero; the resident size (read only for
    jobs not in ``known``: once, when the job is found) bounds pass 1's non-zero pages."""
    found: list[FoundJob] = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            stats = dom.jobStats()
            read_at = clock()
        except libvirt.libvirtError as exc:
            if code(exc) == OPERATION_UNSUPPORTED:
                found.append(FoundJob(dom.UUIDString(), dom.name(), False, {}, 0, None, clock()))
            continue
        if not is_outgoing_migration(stats):
            continue
        uuid = dom.UUIDString()
        resident, free = (None, None) if uuid in known else memory_facts(dom)
        found.append(
            FoundJob(
                uuid, dom.name(), True, stats, int(dom.info()[1]) * 1024, resident, read_at, free
            )
        )
    return found


def idle_domains(conn: Any) -> dict[str, int]:
    """UUID -> domain id of the running domains with no job."""
    idle = {}
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING):
        try:
            if no_job(dom.jobStats()):
                idle[dom.UUIDString()] = int(dom.ID())
        except libvirt.libvirtError:
            continue
    return idle


def active_domains(conn: Any) -> list[str]:
    """UUIDs of the active domains (running or paused), job or not."""
    return [
        dom.UUIDString() for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    ]


def describe(conn: Any, domain: str) -> Described:
    """A running domain by UUID or name; raises libvirtError when there is none."""
    try:
        dom = conn.lookupByUUIDString(domain)
    except libvirt.libvirtError:
        dom = conn.lookupByName(domain)
    if not dom.isActive():
        raise libvirt.libvirtError(f"domain {domain} is not running")
    memory = int(dom.info()[1]) * 1024
    disk = 0
    root = ET.fromstring(dom.XMLDesc(0))
    for target in root.findall("./devices/disk[@device='disk']/target"):
        with contextlib.suppress(libvirt.libvirtError):
            disk += int(dom.blockInfo(target.get("dev", ""))[0])  # capacity
    limits = read_limits(dom, Limits())
    busy = not no_job(dom.jobStats())
    resident, free = memory_facts(dom)
    return Described(
        dom.UUIDString(), dom.name(), int(dom.ID()), memory, disk, limits, busy, resident, free
    )


def domain_state(conn: Any, uuid: str) -> DomainState | None:
    """The domain's state; None when it is gone."""
    try:
        dom = conn.lookupByUUIDString(uuid)
        state, reason = dom.state()
        return DomainState(int(state), int(reason))
    except libvirt.libvirtError as exc:
        if code(exc) == NO_DOMAIN:
            return None
        raise


def end_facts(conn: Any, uuid: str) -> EndFacts:
    """Completed stats and state of a domain whose job left ``jobStats()``."""
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if code(exc) == NO_DOMAIN:
            return EndFacts({}, None)
        raise
    completed = dict(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
    state, reason = dom.state()
    return EndFacts(completed, DomainState(int(state), int(reason)))


def settle_facts(conn: Any, uuid: str) -> EndFacts:
    """``end_facts``, and whether a migration job still runs (for ``outcome_of``)."""
    facts = end_facts(conn, uuid)
    if facts.state is None:
        return facts
    dom = conn.lookupByUUIDString(uuid)
    return facts._replace(running=not job_over(dom.jobStats()))


def read_limits(dom: Any, current: Limits) -> Limits:
    """The migration's max downtime and bandwidth as libvirt has them now."""
    downtime_s = current.max_downtime_s
    bandwidth = current.max_bandwidth_bps
    with contextlib.suppress(libvirt.libvirtError):
        downtime_s = dom.migrateGetMaxDowntime(0) / 1000
    with contextlib.suppress(libvirt.libvirtError):
        mib_s = int(dom.migrateGetMaxSpeed(0))
        bandwidth = None if mib_s <= 0 or mib_s >= _UNLIMITED_MIB_S else mib_s * MIB
    return replace(current, max_downtime_s=downtime_s, max_bandwidth_bps=bandwidth)
