"""A private RabbitMQ broker for tests and benchmarks (Debian's ``rabbitmq-server``).

Never the system service: the broker runs as a plain child process with its own
state directory (mnesia, logs, config, Erlang cookie) under a temporary directory,
its own ``epmd`` on a private port, a unique node name, and every listener on
127.0.0.1 on ports picked free at start (never 5672 or 4369). ``stop()`` asks the
node to stop, then kills the whole process group (``epmd`` included: we start it
ourselves, in the foreground, so it is ours to kill).

::

    broker = Broker.start()          # ~5-10 s; installs rabbitmq-server if missing
    broker.url                       # rabbit://guest:guest@127.0.0.1:PORT/
    broker.kill(); broker.restart()  # an outage: SIGKILL, then the same node again
    broker.pause(); broker.resume()  # a frozen broker: TCP accepts, AMQP never answers
    broker.stop()

Command line: ``python -m lab.bus install`` (as root; waits for the dpkg lock),
``python -m lab.bus run`` (start, print the URL, stop on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "rabbitmq-server"
# The real scripts: /usr/sbin/rabbitmq-server is a wrapper that re-executes them as the
# rabbitmq user, who could not read our private state directory.
_SBIN = Path("/usr/lib/rabbitmq/bin")
_EPMD_CANDIDATES = ("/usr/bin/epmd", "/usr/lib/erlang/bin/epmd")
# Ports the machine's other users own (libvirt lab, the system broker): never pick them.
_RESERVED = {4369, 5672, 15672, 25672, 16509, 16510, *range(26500, 26801)}


# Runs beside the broker and stops it if the process that started it dies without stop()
# (a test run killed by a timeout): kills the process groups listed in BASE/pgids, removes
# BASE. argv: parent pid, BASE.
_WATCHDOG = """
import os, shutil, signal, sys, time
parent, base = int(sys.argv[1]), sys.argv[2]
while os.getppid() == parent:
    time.sleep(1)
try:
    groups = open(os.path.join(base, "pgids")).read().split()
except OSError:
    groups = []
for g in groups:
    try:
        os.killpg(int(g), signal.SIGKILL)
    except (ProcessLookupError, PermissionError, ValueError):
        pass
shutil.rmtree(base, ignore_errors=True)
"""


class BrokerError(Exception):
    """The broker could not be installed, started or reached."""


def installed() -> bool:
    return (_SBIN / "rabbitmq-server").exists() and _epmd() is not None


def _epmd() -> str | None:
    found = shutil.which("epmd")
    return found or next((p for p in _EPMD_CANDIDATES if os.access(p, os.X_OK)), None)


def install(wait_s: float = 900.0) -> None:
    """``apt-get install rabbitmq-server`` when missing; waits while another install
    holds the dpkg lock (never breaks it). The package's own service is not started:
    Debian's policy-rc.d (present in containers) or ours for the duration says no."""
    if installed():
        return
    if os.geteuid() != 0:
        raise BrokerError(
            f"{PACKAGE} is missing and installing it needs root: sudo apt-get install {PACKAGE}"
        )
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:  # keep dpkg from starting the system broker on 5672/4369
        policy.write_text(
            "#!/bin/sh\n# migwatch lab/bus.py: no services during install\nexit 101\n"
        )
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        deadline = time.monotonic() + wait_s
        updated = False
        while True:
            # -o DPkg::Lock::Timeout makes apt itself wait for the lock.
            proc = subprocess.run(
                [
                    "apt-get",
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "-o",
                    "DPkg::Lock::Timeout=60",
                    PACKAGE,
                ],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode == 0 and installed():
                return
            text = proc.stderr + proc.stdout
            if "lock" in text.lower() and time.monotonic() < deadline:
                time.sleep(5)
                continue
            if not updated and ("Unable to locate" in text or "404" in text):
                subprocess.run(
                    ["apt-get", "update", "-qq"], env=env, check=False, capture_output=True
                )
                updated = True
                continue
            raise BrokerError(f"apt-get install {PACKAGE} failed: {text.strip()[-500:]}")
    finally:
        if ours:
            policy.unlink(missing_ok=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside the reserved ones."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _RESERVED:
            return port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """One private broker node; see the module docstring."""

    def __init__(self, base: Path, port: int, dist_port: int, epmd_port: int, name: str) -> None:
        self.base = base
        self.port = port
        self.dist_port = dist_port
        self.epmd_port = epmd_port
        self.nodename = f"{name}@localhost"
        self._epmd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def url(self) -> str:
        """The oslo.messaging transport URL of this broker."""
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    @classmethod
    def start(cls, base: Path | None = None, timeout_s: float = 60.0) -> Broker:
        install()
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="migwatch-bus-"))
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        port, dist, epmd = sorted(ports)
        broker = cls(base, port, dist, epmd, f"mwbus{os.getpid()}x{port}")
        broker._prepare()
        broker._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(base)],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        try:
            broker._start_epmd()
            broker._start_server(timeout_s)
        except BaseException:
            broker.stop()
            raise
        return broker

    def _prepare(self) -> None:
        for sub in ("mnesia", "log", "home"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        cookie = self.base / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            # A near-full shared disk must not block publishers in tests.
            "disk_free_limit.absolute = 1MB\n"
            "log.console = false\n"
            "log.file.level = warning\n"
        )

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.base / "home"),  # the Erlang cookie lives here
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),  # absent: none
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            # The distribution listener on loopback only.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _start_epmd(self) -> None:
        epmd = _epmd()
        if epmd is None:
            raise BrokerError("epmd not found (erlang-base)")
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self._env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._record_groups()

    def _record_groups(self) -> None:
        groups = [p.pid for p in (self._epmd, self._server) if p is not None]
        (self.base / "pgids").write_text(" ".join(map(str, groups)))

    def _start_server(self, timeout_s: float) -> None:
        out = (self.base / "log" / "server.out").open("ab")
        with out:
            self._server = subprocess.Popen(
                [str(_SBIN / "rabbitmq-server")],
                env=self._env(),
                start_new_session=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base,
            )
        self._record_groups()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise BrokerError(
                    f"rabbitmq-server exited with {self._server.returncode}; "
                    f"see {self.base / 'log'}"
                )
            if _listening(self.port):
                return
            time.sleep(0.2)
        raise BrokerError(f"rabbitmq-server did not listen on {self.port} in {timeout_s:.0f} s")

    def kill(self) -> None:
        """An outage: SIGKILL the broker's process group (epmd stays, as on a host
        whose broker crashed)."""
        if self._server is not None:
            self._signal_group(self._server, signal.SIGKILL)
            self._server.wait()
            self._server = None
        self._paused = False

    def restart(self, timeout_s: float = 60.0) -> None:
        """The same node (same ports and state directory) again."""
        if self._server is not None:
            raise BrokerError("the broker is running; kill() or stop() it first")
        self._start_server(timeout_s)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections open, nothing answers."""
        if self._server is not None:
            self._signal_group(self._server, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        if self._server is not None and self._paused:
            self._signal_group(self._server, signal.SIGCONT)
            self._paused = False

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the broker's processes (its group)."""
        if self._server is None:
            return 0.0
        return group_cpu_seconds(self._server.pid)

    def rabbitmqctl(self, *args: str, timeout_s: float = 30.0) -> str:
        proc = subprocess.run(
            [str(_SBIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)}: {proc.stderr.strip()[-300:]}")
        return proc.stdout

    def stop(self) -> None:
        """Stop the node, then kill whatever of ours is left (epmd included)."""
        if self._server is not None:
            self.resume()
            if self._server.poll() is None:
                with contextlib.suppress(BrokerError, subprocess.TimeoutExpired, OSError):
                    self.rabbitmqctl("stop", timeout_s=20)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._server.wait(timeout=10)
            self._signal_group(self._server, signal.SIGKILL)
            self._server.wait()
            self._server = None
        if self._epmd is not None:
            self._signal_group(self._epmd, signal.SIGKILL)
            self._epmd.wait()
            self._epmd = None
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        shutil.rmtree(self.base, ignore_errors=True)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # start_new_session: the child leads its own group, so its pid is the group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system, children reaped included) of every process in a group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        # After the command: state ppid pgrp ... utime(14th) stime cutime cstime.
        if int(fields[2]) == pgid:
            total += sum(int(f) for f in fields[11:15])
    return total / tick


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["install"]:
        install()
        print(f"{PACKAGE} is installed")
        return 0
    if args == ["run"]:
        broker = Broker.start()
        try:
            print(broker.url, flush=True)
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            broker.stop()
        return 0
    print("usage: python -m lab.bus install | run", file=sys.stderr)
    return 1


if __name__ == "__main__":
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    raise SystemExit(main())
