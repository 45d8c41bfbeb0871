"""``migwatch-agent``'s command line: user errors are one line and exit 1; config files work."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from migwatch.v1 import migwatch_pb2 as pb
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from tests.conftest import SpawnAgent


def run_agent(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migwatch.agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# gRPC core's own log lines ("E1125 10:57:56.131761 9219 add_port.cc:83] ...").
_GRPC_CORE_LOG = re.compile(r"^[EWID]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


def assert_user_error(
    result: subprocess.CompletedProcess[str], *needles: str, allow_grpc_log: bool = False
) -> None:
    """Exit 1, no traceback, one line on stderr naming what is wrong."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    if allow_grpc_log:
        lines = [line for line in lines if not _GRPC_CORE_LOG.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("migwatch-agent: ")
    for needle in needles:
        assert needle in lines[0]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_help_shows_examples() -> None:
    """--help exits 0 and shows example command lines, grpcurl included."""
    result = run_agent("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "migwatch-agent --backend libvirt" in result.stdout
    assert "grpcurl -plaintext" in result.stdout
    # A two-line example keeps its shell continuation (a bare backslash in the source
    # would join the lines with a run of spaces).
    assert "--listen 0.0.0.0:50051 \\\n      --tls-cert" in result.stdout


@pytest.mark.parametrize(
    ("flag", "value", "setting"),
    [
        ("--retention", "-1", "retention_s"),
        ("--preflight-interval", "-5", "preflight_interval_s"),
        ("--slow-budget", "0", "slow_budget_s"),
    ],
)
def test_out_of_range_durations_are_a_one_line_error(flag: str, value: str, setting: str) -> None:
    """A negative retention or pre-flight interval, or a slow budget of 0, exits 1 naming the
    setting and an example, instead of serving with it."""
    assert_user_error(run_agent(flag, value), setting, f"e.g. {flag} ")


@pytest.mark.parametrize("kind", ["a file", "not a database"])
def test_unusable_state_dir_is_a_one_line_error(tmp_path: Path, kind: str) -> None:
    """A --state-dir that is a file, or holds a finals.sqlite3 that is not sqlite, exits 1
    with one line naming it, not a traceback."""
    if kind == "a file":
        state_dir = tmp_path / "file"
        state_dir.write_text("")
    else:
        state_dir = tmp_path / "dir"
        state_dir.mkdir()
        (state_dir / "finals.sqlite3").write_text("not sqlite " * 100)
    result = run_agent("--state-dir", str(state_dir), "--listen", "127.0.0.1:0")
    assert_user_error(result, f"state_dir {state_dir}", "--state-dir")


def test_unknown_backend_flag_is_a_one_line_error() -> None:
    """--backend with an unknown name exits 1 with one line naming the valid backends."""
    assert_user_error(run_agent("--backend", "xen"), "xen", "simulated")


def test_unknown_backend_in_config_file_is_a_one_line_error(tmp_path: Path) -> None:
    """backend = "xen" in the TOML file exits 1 with one line naming the valid backends."""
    assert_user_error(run_agent("--config", str(write(tmp_path, 'backend = "xen"\n'))), "xen")


@pytest.mark.parametrize(
    ("periods", "expected"), [("1,x", "comma-separated"), ("0,4", "1 to 60"), ("1,61", "1 to 60")]
)
def test_bad_preflight_periods_are_a_one_line_error(periods: str, expected: str) -> None:
    """--preflight-periods must be whole seconds QEMU accepts; the error gives an example."""
    assert_user_error(run_agent("--preflight-periods", periods), expected, "1,2,4,8,16")


def test_preflight_periods_from_the_config_file_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "preflight_periods_s = [1, 2.5]\n")
    assert_user_error(run_agent("--config", str(path)), "whole seconds")


@pytest.mark.parametrize("listen", ["nope", "127.0.0.1", ":50051", "127.0.0.1:70000", "h:p"])
def test_malformed_listen_is_a_one_line_error(listen: str) -> None:
    """A --listen that is not HOST:PORT exits 1 with one line giving an example."""
    assert_user_error(run_agent("--listen", listen), repr(listen), "127.0.0.1:50051")


def test_unlistenable_address_is_a_one_line_error() -> None:
    """A well-formed --listen that cannot be bound exits 1 with one line, not a traceback."""
    # gRPC core logs its own line about the failed bind before ours; tolerated here.
    result = run_agent("--listen", "256.1.1.1:50051")
    assert_user_error(result, "256.1.1.1:50051", allow_grpc_log=True)


def test_port_in_use_is_a_one_line_error(spawn_agent: SpawnAgent) -> None:
    """A second agent on a port another agent serves exits 1, instead of sharing the port."""
    first = spawn_agent("--log-level", "warning")
    try:
        result = run_agent("--listen", first.target, timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second agent started serving on {first.target}, already in use")
    assert_user_error(result, first.target, allow_grpc_log=True)


def test_unknown_toml_key_is_a_one_line_error(tmp_path: Path) -> None:
    """A misspelt key in the config file exits 1 with one line naming the key."""
    path = write(tmp_path, 'lisen = "127.0.0.1:1"\n')
    assert_user_error(run_agent("--config", str(path)), "'lisen'", "listen")


def test_invalid_toml_and_missing_file_are_one_line_errors(tmp_path: Path) -> None:
    """A config file that is not TOML, or not there, exits 1 with one line naming the file."""
    bad = write(tmp_path, "listen = \n")
    assert_user_error(run_agent("--config", str(bad)), str(bad))
    missing = tmp_path / "missing.toml"
    assert_user_error(run_agent("--config", str(missing)), str(missing))


def test_unknown_scenario_is_a_one_line_error() -> None:
    """An unknown simulated scenario exits 1 with one line listing the catalog."""
    assert_user_error(run_agent("--scenario", "bogus"), "'bogus'", "converging")


@pytest.mark.parametrize(
    ("url", "needle"),
    [("rabbit-host:5672", "is not a transport URL"), ("nosuchdriver://h:1/", "nosuchdriver")],
)
def test_bad_notify_url_is_a_one_line_error(url: str, needle: str) -> None:
    """A --notify-url that is no transport URL, or names no oslo.messaging driver, exits 1
    with one line (nothing waits for a broker)."""
    assert_user_error(run_agent("--notify-url", url, "--listen", "127.0.0.1:0"), needle)


def test_bad_notify_interval_is_a_one_line_error() -> None:
    """--notify-interval outside 0.1-3600 s exits 1 naming the range."""
    assert_user_error(run_agent("--notify-interval", "0"), "0.1 to 3600")


def test_config_file_is_honoured_and_flags_override_it(
    tmp_path: Path, spawn_agent: SpawnAgent, unused_port: int
) -> None:
    """The agent listens on the TOML file's port, with its scenarios, and a flag beats the file."""
    port = unused_port
    path = write(
        tmp_path,
        f'listen = "127.0.0.1:{port}"\n'
        'host-name = "file-host"\n'
        'simulated_scenarios = ["quick", "quick"]\n'
        "simulated_speed = 20\n"
        "sample_interval_s = 0.05\n"
        "simulated_repeat = false\n",
    )
    sub = spawn_agent(
        "--config", str(path), "--host-name", "flag-host", port=port, listen_flag=False
    )
    with grpc.insecure_channel(sub.target) as chan:
        reply = pb_grpc.MigrationServiceStub(chan).ListMigrations(
            pb.ListMigrationsRequest(include_finished=True), timeout=5
        )
    assert reply.agent_status.host == "flag-host"
    assert reply.agent_status.backend == "simulated"
    names = {m.domain_name for m in reply.migrations}
    assert len(names) >= 2 and all(n.startswith("sim-quick-") for n in names), names
    sub.proc.send_signal(signal.SIGTERM)
    assert sub.proc.wait(timeout=10) == 0


def test_unknown_migration_policy_is_a_one_line_error() -> None:
    """--migration-policy takes only what the control plane can permit; the error says so."""
    assert_user_error(
        run_agent("--migration-policy", "auto-converge,xbzrle"), "xbzrle", "post-copy"
    )


def test_migration_policy_from_flag_and_file() -> None:
    """The declared policy reaches the tracker's policy, from the flag or the TOML key."""
    from migwatch.agent.__main__ import load_config, parse_args
    from migwatch.agent.config import policy_of

    config = load_config(parse_args(["--migration-policy", "auto-converge, post-copy"]))
    policy = policy_of(config)
    assert policy.auto_converge and policy.post_copy
    assert not policy_of(load_config(parse_args([]))).auto_converge
