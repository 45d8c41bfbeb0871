"""The lab keeps off a real hypervisor's ports and says who is in its way."""

from __future__ import annotations

import os
import socket

import pytest

from lab import hosts

LIBVIRT_TCP = 16509  # libvirtd's standard TCP port
LIBVIRT_MIGRATION = range(49152, 49216)  # QEMU driver's default incoming-migration range


def test_default_ports_avoid_libvirts_own() -> None:
    """By default no lab port is libvirtd's 16509 or in its migration range, nor ephemeral."""
    ports = hosts.lab_ports(hosts.host_specs(hosts.DEFAULT_PORT_BASE))
    assert LIBVIRT_TCP not in ports
    assert not set(ports) & set(LIBVIRT_MIGRATION)
    assert max(ports) < 32768  # below Linux's ephemeral range
    assert len(ports) == len(set(ports)) == 2 + 2 * 64


def test_port_base_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MIGWATCH_LAB_PORT_BASE moves every port; a bad value is one clear error."""
    monkeypatch.setenv("MIGWATCH_LAB_PORT_BASE", "30000")
    specs = hosts.host_specs(hosts.port_base())
    assert (specs["A"].tcp_port, specs["B"].tcp_port) == (30009, 30010)
    assert specs["A"].uri == "qemu+tcp://127.0.0.1:30009/system"
    for bad in ("abc", "80", "65500"):
        monkeypatch.setenv("MIGWATCH_LAB_PORT_BASE", bad)
        with pytest.raises(hosts.LabError, match="MIGWATCH_LAB_PORT_BASE"):
            hosts.port_base()


def test_a_taken_port_names_its_holder() -> None:
    """A listener on a lab port stops the lab with one line naming that process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        base = port - 9  # our listener sits where host A's daemon would
        specs = hosts.host_specs(base)
        assert set(hosts.port_holders([port])) == {port}
        assert f"pid {os.getpid()} " in hosts.port_holders([port])[port]
        with pytest.raises(hosts.LabError) as err:
            hosts.check_ports_free(specs)
    message = str(err.value)
    assert "\n" not in message
    assert f"lab port {port} is taken by pid {os.getpid()}" in message
    assert "MIGWATCH_LAB_PORT_BASE" in message
    # Once the listener is gone, nothing is in the way on those ports.
    assert hosts.port_holders([port]) == {}
