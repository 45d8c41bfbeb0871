"""The wheel installs into a fresh venv as one `migwatch` namespace with both commands working."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What a wheel is built from; build/ and *.egg-info are left behind, so stale copies of
# deleted modules cannot ride along.
SOURCES = ("pyproject.toml", "README.md", "proto", "agent", "client")


def run(
    argv: list[str | Path], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    # Outside the repo and without PYTHONPATH, so only the installed wheel can be imported.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_wheel_installs_into_a_fresh_venv_with_working_commands(tmp_path: Path) -> None:
    """The built wheel holds only migwatch/ (stubs, .proto, .pyi, py.typed), and in a fresh venv
    the three packages import and `migwatch-agent --help` and `migwatch --help` exit 0."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", dist, src], cwd=tmp_path)  # fmt: skip
    (wheel,) = dist.glob("migwatch-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"migwatch"}, top
    for needed in (
        "migwatch/py.typed",
        "migwatch/v1/migwatch.proto",
        "migwatch/v1/migwatch_pb2.pyi",
        "migwatch/v1/migwatch_pb2_grpc.py",
        "migwatch/agent/__main__.py",
        "migwatch/agent/backends/simulated.py",
        "migwatch/agent/backends/libvirt/watcher.py",
        "migwatch/agent/serve/auth/decisions.py",
        "migwatch/client/cli.py",
    ):
        assert needed in names, f"{needed} missing from {wheel.name}"

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    bin_ = venv / "bin"
    run([bin_ / "python", "-m", "pip", "install", "-q", wheel], cwd=tmp_path, timeout=300)
    script = (
        "import importlib.util as u, migwatch.agent, migwatch.client, migwatch.v1.migwatch_pb2\n"
        "import migwatch.agent.serve.server, migwatch.client.cli\n"
        "print(u.find_spec('agent'), u.find_spec('client'), migwatch.agent.__file__)"
    )
    probe = run([bin_ / "python", "-c", script], cwd=tmp_path)
    none_agent, none_client, agent_file = probe.stdout.split()
    assert (none_agent, none_client) == ("None", "None")  # no bare top-level agent/client
    assert agent_file.startswith(str(venv))
    for command in ("migwatch-agent", "migwatch"):
        help_text = run([bin_ / command, "--help"], cwd=tmp_path).stdout
        assert help_text.startswith("usage: "), help_text


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """Each folder under agent/ and client/ holding an __init__.py is a package pyproject.toml
    lists, so no subpackage silently drops out of the wheel."""
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = set()
    for top, name in (("agent", "migwatch.agent"), ("client", "migwatch.client")):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top).parts
            found.add(".".join((name, *rel)))
    assert found <= listed, f"not in pyproject.toml packages: {sorted(found - listed)}"
