"""Agent settings: defaults, then a TOML file, then command-line flags.

Every key of the TOML file is a field of ``AgentConfig`` (same name, dashes or
underscores); an unknown key is an error that names it, so a typo never goes
unnoticed. Example::

    backend = "libvirt"
    listen = "0.0.0.0:50051"
    libvirt_uri = "qemu:///system"
    sample_interval_s = 0.5
    retention_s = 86400

Security (docs/SECURITY.md)::

    tls_cert = "/etc/migwatch/agent.crt"
    tls_key = "/etc/migwatch/agent.key"
    tls_client_ca = "/etc/migwatch/clients-ca.crt"   # client certificates required
    token_file = "/etc/migwatch/tokens"              # TOKEN ROLE [NAME] per line

    [roles]   # client-certificate names (CN, SAN DNS) -> role; wildcards, any case
    operators = ["ops-*"]
    viewers = ["*"]
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migwatch.agent.model import MigrationPolicy

BACKENDS = ("simulated", "libvirt", "replay", "qmp")
# The [roles] table of the TOML file: its keys are these fields.
ROLE_KEYS = ("operators", "viewers")


class ConfigError(Exception):
    """A setting is wrong; the message says which and how to fix it."""


#: ``--migration-policy`` values.
POLICIES = ("auto-converge", "post-copy")


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
    # Seconds between scans for new jobs: bounds how late a migration is found (the scan
    # never waits on a pre-flight measurement; an iteration event wakes it at once).
    scan_interval_s: float = 1.0
    record_dir: str = ""  # write a trace per migration here (TRACE_FORMAT.md)
    # Seconds between pre-flight dirty-rate measurements of each idle guest; 0: off.
    preflight_interval_s: float = 120.0
    # Page-sampling periods of one measurement, seconds (QEMU takes 1-60). Short ones give
    # a fast writer's rate before its hot set caps them; the longer ones (up to a typical
    # pass 1) show where the hot set saturates, which decides how much pass 2 re-sends.
    preflight_periods_s: tuple[int, ...] = (1, 2, 4, 8, 16)
    # Guests measured at once. QEMU samples in its own thread and the agent only starts and
    # reads each measurement, so this bounds the guests' (small) hashing cost, not ours.
    preflight_concurrency: int = 4
    # What the control plane permits for migrations from this host ("auto-converge",
    # "post-copy"; nova's live_migration_permit_auto_converge / _post_copy): libvirt's job
    # stats show auto-converge only once QEMU throttles, so without this a guest that
    # auto-converge will slow is called NOT_CONVERGING until then.
    migration_policy: tuple[str, ...] = ()
    # qmp: one QEMU guest per QMP socket (Proxmox VE's are /var/run/qemu-server/<vmid>.qmp);
    # the sampling, pre-flight and record settings above apply to it too.
    qmp_sockets: str = "/var/run/qemu-server/*.qmp"
    # replay
    traces: tuple[str, ...] = ()
    speed: float = 1.0
    # simulated
    simulated_scenarios: tuple[str, ...] = ("converging", "slow", "not-converging", "disk")
    simulated_speed: float = 1.0
    simulated_repeat: bool = True
    simulated_drain: int = 0  # the host drains its idle guests N at a time; 0: it does not
    # serving
    retention_s: float = 24 * 3600.0
    max_subscribers: int = 10_000
    # Prometheus /metrics on HOST:PORT (over TLS with tls_cert/tls_key); empty: off.
    metrics_listen: str = ""
    slow_budget_s: float = 600.0
    # Per-migration teardown outside the job's clock (EstimatorConfig.migration_overhead_s).
    migration_overhead_s: float = 1.6
    grace_s: float = 2.0
    state_dir: str = ""  # sqlite store of finished migrations; empty: in memory only
    # Notifications on OpenStack's bus (agent/notify/): an oslo.messaging transport URL
    # (rabbit://user:pass@host:5672/); empty: off. Progress at most every notify_interval_s
    # per migration, because per-sample progress overloaded RabbitMQ in nova (bug 2091138).
    notify_url: str = ""
    notify_topic: str = "migwatch_notifications"
    notify_interval_s: float = 10.0
    # An oslo.config file with the deployment's messaging settings ([oslo_messaging_rabbit]:
    # amqp_durable_queues, rabbit_quorum_queue, ssl, heartbeats; [DEFAULT] control_exchange),
    # e.g. a copy of nova.conf: a publisher whose exchange or queue settings differ from the
    # ones the broker already has is refused by RabbitMQ (PRECONDITION_FAILED). Empty: the
    # oslo.messaging defaults.
    notify_config: str = ""
    # security (serve/auth/, docs/SECURITY.md)
    tls_cert: str = ""  # PEM server certificate (chain); with tls_key: serve TLS
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM CA: client certificates are required and verified
    token_file: str = ""  # bearer tokens, "TOKEN ROLE [NAME]" per line
    insecure: bool = False  # allow plaintext on a non-loopback address
    operators: tuple[str, ...] = ()  # certificate-name patterns with the operator role
    viewers: tuple[str, ...] = ("*",)  # ... with the viewer role
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> AgentConfig:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"backend {self.backend!r} is unknown: choose one of {', '.join(BACKENDS)}"
            )
        host = _host_of("listen", self.listen, "127.0.0.1:50051")
        if not 0.05 <= self.sample_interval_s <= 60:
            raise ConfigError(
                f"sample_interval_s {self.sample_interval_s} must be 0.05 to 60 seconds"
            )
        if not 0.1 <= self.scan_interval_s <= 60:
            raise ConfigError(f"scan_interval_s {self.scan_interval_s} must be 0.1 to 60 seconds")
        if self.speed <= 0 or self.simulated_speed <= 0:
            raise ConfigError("speed must be greater than 0")
        if not 0 <= self.simulated_drain <= 64:
            raise ConfigError(f"simulated_drain {self.simulated_drain} must be 0 (off) to 64")
        if self.backend == "replay" and not self.traces:
            raise ConfigError("the replay backend needs at least one --trace FILE")
        periods = tuple(self.preflight_periods_s)
        if not periods or any(
            isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 60 for p in periods
        ):
            raise ConfigError(
                f"preflight_periods_s {list(periods)} must be whole seconds from 1 to 60, "
                "e.g. --preflight-periods 1,2,4,8,16"
            )
        unknown = sorted(set(self.migration_policy) - set(POLICIES))
        if unknown:
            raise ConfigError(
                f"migration_policy {', '.join(unknown)} is unknown: choose from"
                f" {', '.join(POLICIES)}, e.g. --migration-policy auto-converge,post-copy"
            )
        if self.preflight_concurrency < 1:
            raise ConfigError("preflight_concurrency must be at least 1 (guests measured at once)")
        listens = {"listen": (self.listen, host)}
        if self.metrics_listen:
            listens["metrics_listen"] = (
                self.metrics_listen,
                _host_of("metrics_listen", self.metrics_listen, "127.0.0.1:9469"),
            )
        if not 0.0 <= self.migration_overhead_s <= 600.0:
            raise ConfigError(
                f"migration_overhead_s {self.migration_overhead_s} must be 0 to 600 seconds"
            )
        if self.preflight_interval_s < 0:
            raise ConfigError(
                f"preflight_interval_s {self.preflight_interval_s} must be 0 (off) or more "
                "seconds, e.g. --preflight-interval 120"
            )
        if self.slow_budget_s <= 0:
            raise ConfigError(
                f"slow_budget_s {self.slow_budget_s} must be more than 0 seconds (a migration "
                "expected to take longer is 'slow'), e.g. --slow-budget 600"
            )
        if self.retention_s < 0:
            raise ConfigError(
                f"retention_s {self.retention_s} must be 0 or more seconds (finished "
                "migrations are kept this long), e.g. --retention 86400"
            )
        if self.max_subscribers < 1:
            raise ConfigError("max_subscribers must be at least 1")
        if self.notify_url and "://" not in self.notify_url:
            raise ConfigError(
                f"notify_url {self.notify_url!r} is not a transport URL, e.g. "
                "rabbit://user:pass@rabbit-host:5672/"
            )
        if not 0.1 <= self.notify_interval_s <= 3600:
            raise ConfigError(
                f"notify_interval_s {self.notify_interval_s} must be 0.1 to 3600 seconds"
            )
        if not self.notify_topic:
            raise ConfigError("notify_topic must not be empty")
        if self.notify_config:
            if not self.notify_url:
                raise ConfigError(
                    "notify_config is set but notify_url is not: give the transport URL too"
                )
            if not Path(self.notify_config).is_file():
                raise ConfigError(
                    f"notify_config {self.notify_config}: no such file; give an oslo.config "
                    "file with your deployment's [oslo_messaging_rabbit] settings (e.g. a copy "
                    "of nova.conf)"
                )
        self._validate_security(listens)
        return self

    def _validate_security(self, listens: dict[str, tuple[str, str]]) -> None:
        """``listens``: setting -> (its HOST:PORT value, the host in it)."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both tls_cert and tls_key (--tls-cert, --tls-key)")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError(
                "tls_client_ca (--tls-client-ca) needs the agent's own tls_cert and tls_key too"
            )
        for setting, (value, host) in listens.items():
            if not self.tls_cert and not self.insecure and not is_loopback(host):
                raise ConfigError(
                    f"{setting} {value!r} is not a loopback address and TLS is off: give "
                    "--tls-cert and --tls-key (docs/SECURITY.md), or --insecure to serve "
                    "plaintext anyway"
                )


def policy_of(config: AgentConfig) -> MigrationPolicy:
    """The declared migration policy of ``config`` (validated)."""
    return MigrationPolicy(
        auto_converge="auto-converge" in config.migration_policy,
        post_copy="post-copy" in config.migration_policy,
    )


def _host_of(setting: str, value: str, example: str) -> str:
    """The host of a HOST:PORT setting; ConfigError with an example when it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{setting} {value!r} is not HOST:PORT, e.g. {example}")
    return host


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (bracketed or not); any other name is not."""
    host = host.removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    known = {f.name for f in dataclasses.fields(AgentConfig)} - {"extra", *ROLE_KEYS}
    values: dict[str, Any] = {}
    roles = raw.pop("roles", {})
    if not isinstance(roles, dict):
        raise ConfigError(f"config file {path}: roles must be a table: [roles] operators = [...]")
    for key, value in roles.items():
        if key not in ROLE_KEYS:
            raise ConfigError(
                f"config file {path}: unknown role {key!r} in [roles]; "
                f"known: {', '.join(ROLE_KEYS)}"
            )
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config file {path}: [roles] {key} must be a list of name patterns")
        values[key] = tuple(value)
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(
                f"config file {path}: unknown setting {key!r}; known: {', '.join(sorted(known))}"
            )
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def build(file_values: dict[str, Any], overrides: dict[str, Any]) -> AgentConfig:
    """Merge TOML values and explicitly given flags (``None`` means not given)."""
    merged = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return AgentConfig(**merged).validate()
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
