"""Agent settings: defaults, then a TOML file, then command-line flags.

Every key of the TOML file is a field of ``AgentConfig`` (same name, dashes or
underscores); an unknown key is an error that names it, so a typo never goes
unnoticed. Example::

    backend = "libvirt"
    listen = "0.0.0.0:50051"
    libvirt_uri = "qemu:///system"
    sample_interval_s = 0.5
    retention_s = 86400
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKENDS = ("simulated", "libvirt", "replay")


class ConfigError(Exception):
    """A setting is wrong; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class AgentConfig:
    backend: str = "simulated"
    listen: str = "127.0.0.1:50051"
    log_level: str = "info"
    # Host name reported in records; empty: the backend's own (libvirt hostname).
    host_name: str = ""
    # libvirt
    libvirt_uri: str = "qemu:///system"
    sample_interval_s: float = 0.5
    scan_interval_s: float = 2.0
    record_dir: str = ""  # write a trace per migration here (TRACE_FORMAT.md)
    # Seconds between pre-flight dirty-rate measurements of each idle guest; 0: off.
    preflight_interval_s: float = 120.0
    # replay
    traces: tuple[str, ...] = ()
    speed: float = 1.0
    # simulated
    simulated_scenarios: tuple[str, ...] = ("converging", "slow", "not-converging", "disk")
    simulated_speed: float = 1.0
    simulated_repeat: bool = True
    # serving
    retention_s: float = 24 * 3600.0
    max_subscribers: int = 10_000
    slow_budget_s: float = 600.0
    grace_s: float = 2.0
    state_dir: str = ""  # sqlite store of finished migrations; empty: in memory only
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> AgentConfig:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r} is unknown: choose one of {', '.join(BACKENDS)}")
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"listen {self.listen!r} is not HOST:PORT, e.g. 127.0.0.1:50051")
        if not 0.05 <= self.sample_interval_s <= 60:
            raise ConfigError(f"sample_interval_s {self.sample_interval_s} must be 0.05 to 60 seconds")
        if self.speed <= 0 or self.simulated_speed <= 0:
            raise ConfigError("speed must be greater than 0")
        if self.backend == "replay" and not self.traces:
            raise ConfigError("the replay backend needs at least one --trace FILE")
        if self.max_subscribers < 1:
            raise ConfigError("max_subscribers must be at least 1")
        return self


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    known = {f.name for f in dataclasses.fields(AgentConfig)} - {"extra"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"config file {path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def build(file_values: dict[str, Any], overrides: dict[str, Any]) -> AgentConfig:
    """Merge TOML values and explicitly given flags (``None`` means not given)."""
    merged = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return AgentConfig(**merged).validate()
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
