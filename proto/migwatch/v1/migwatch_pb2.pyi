import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    PHASE_SETUP: _ClassVar[Phase]
    PHASE_DISK_MIRROR: _ClassVar[Phase]
    PHASE_PRECOPY: _ClassVar[Phase]
    PHASE_POSTCOPY: _ClassVar[Phase]
    PHASE_PAUSED: _ClassVar[Phase]
    PHASE_COMPLETED: _ClassVar[Phase]
    PHASE_FAILED: _ClassVar[Phase]
    PHASE_CANCELLED: _ClassVar[Phase]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_OUTGOING: _ClassVar[Direction]
    DIRECTION_INCOMING: _ClassVar[Direction]

class Convergence(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONVERGENCE_UNSPECIFIED: _ClassVar[Convergence]
    CONVERGENCE_CONVERGING: _ClassVar[Convergence]
    CONVERGENCE_SLOW: _ClassVar[Convergence]
    CONVERGENCE_STALLED: _ClassVar[Convergence]
    CONVERGENCE_NOT_CONVERGING: _ClassVar[Convergence]

class EtaBasis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ETA_BASIS_UNSPECIFIED: _ClassVar[EtaBasis]
    ETA_BASIS_DEFAULT: _ClassVar[EtaBasis]
    ETA_BASIS_PREFLIGHT: _ClassVar[EtaBasis]
    ETA_BASIS_LIVE: _ClassVar[EtaBasis]

class RecommendedAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOMMENDED_ACTION_UNSPECIFIED: _ClassVar[RecommendedAction]
    RECOMMENDED_ACTION_RAISE_MAX_DOWNTIME: _ClassVar[RecommendedAction]
    RECOMMENDED_ACTION_RAISE_BANDWIDTH: _ClassVar[RecommendedAction]
    RECOMMENDED_ACTION_POST_COPY: _ClassVar[RecommendedAction]
    RECOMMENDED_ACTION_PAUSE: _ClassVar[RecommendedAction]
    RECOMMENDED_ACTION_ABORT: _ClassVar[RecommendedAction]

class HostState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOST_STATE_UNSPECIFIED: _ClassVar[HostState]
    HOST_STATE_OK: _ClassVar[HostState]
    HOST_STATE_DEGRADED: _ClassVar[HostState]

class ForceCompleteMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORCE_COMPLETE_METHOD_UNSPECIFIED: _ClassVar[ForceCompleteMethod]
    FORCE_COMPLETE_METHOD_POST_COPY: _ClassVar[ForceCompleteMethod]
    FORCE_COMPLETE_METHOD_PAUSE: _ClassVar[ForceCompleteMethod]
PHASE_UNSPECIFIED: Phase
PHASE_SETUP: Phase
PHASE_DISK_MIRROR: Phase
PHASE_PRECOPY: Phase
PHASE_POSTCOPY: Phase
PHASE_PAUSED: Phase
PHASE_COMPLETED: Phase
PHASE_FAILED: Phase
PHASE_CANCELLED: Phase
DIRECTION_UNSPECIFIED: Direction
DIRECTION_OUTGOING: Direction
DIRECTION_INCOMING: Direction
CONVERGENCE_UNSPECIFIED: Convergence
CONVERGENCE_CONVERGING: Convergence
CONVERGENCE_SLOW: Convergence
CONVERGENCE_STALLED: Convergence
CONVERGENCE_NOT_CONVERGING: Convergence
ETA_BASIS_UNSPECIFIED: EtaBasis
ETA_BASIS_DEFAULT: EtaBasis
ETA_BASIS_PREFLIGHT: EtaBasis
ETA_BASIS_LIVE: EtaBasis
RECOMMENDED_ACTION_UNSPECIFIED: RecommendedAction
RECOMMENDED_ACTION_RAISE_MAX_DOWNTIME: RecommendedAction
RECOMMENDED_ACTION_RAISE_BANDWIDTH: RecommendedAction
RECOMMENDED_ACTION_POST_COPY: RecommendedAction
RECOMMENDED_ACTION_PAUSE: RecommendedAction
RECOMMENDED_ACTION_ABORT: RecommendedAction
HOST_STATE_UNSPECIFIED: HostState
HOST_STATE_OK: HostState
HOST_STATE_DEGRADED: HostState
FORCE_COMPLETE_METHOD_UNSPECIFIED: ForceCompleteMethod
FORCE_COMPLETE_METHOD_POST_COPY: ForceCompleteMethod
FORCE_COMPLETE_METHOD_PAUSE: ForceCompleteMethod

class Transfer(_message.Message):
    __slots__ = ("total_bytes", "processed_bytes", "remaining_bytes", "bytes_per_second", "fraction_done")
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_BYTES_FIELD_NUMBER: _ClassVar[int]
    REMAINING_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    FRACTION_DONE_FIELD_NUMBER: _ClassVar[int]
    total_bytes: int
    processed_bytes: int
    remaining_bytes: int
    bytes_per_second: int
    fraction_done: float
    def __init__(self, total_bytes: _Optional[int] = ..., processed_bytes: _Optional[int] = ..., remaining_bytes: _Optional[int] = ..., bytes_per_second: _Optional[int] = ..., fraction_done: _Optional[float] = ...) -> None: ...

class Recommendation(_message.Message):
    __slots__ = ("action", "summary", "max_downtime", "max_bandwidth", "predicted_eta")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    MAX_BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_ETA_FIELD_NUMBER: _ClassVar[int]
    action: RecommendedAction
    summary: str
    max_downtime: _duration_pb2.Duration
    max_bandwidth: int
    predicted_eta: _duration_pb2.Duration
    def __init__(self, action: _Optional[_Union[RecommendedAction, str]] = ..., summary: _Optional[str] = ..., max_downtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_bandwidth: _Optional[int] = ..., predicted_eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Migration(_message.Message):
    __slots__ = ("id", "domain_uuid", "domain_name", "source_host", "destination_host", "direction", "phase", "memory", "disk", "dirty_rate_bytes_per_second", "iteration", "elapsed", "eta", "eta_low", "eta_high", "convergence", "convergence_reason", "expected_downtime", "max_downtime", "max_bandwidth", "started_at", "updated_at", "finished_at", "error_message", "sequence", "actual_downtime", "agent_host", "backend", "recommendations", "eta_basis", "postcopy_allowed", "auto_converge_throttle_percent", "postcopy_requests")
    ID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_UUID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HOST_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_HOST_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    DIRTY_RATE_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    ETA_LOW_FIELD_NUMBER: _ClassVar[int]
    ETA_HIGH_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    MAX_BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_HOST_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    ETA_BASIS_FIELD_NUMBER: _ClassVar[int]
    POSTCOPY_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    AUTO_CONVERGE_THROTTLE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    POSTCOPY_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    domain_uuid: str
    domain_name: str
    source_host: str
    destination_host: str
    direction: Direction
    phase: Phase
    memory: Transfer
    disk: Transfer
    dirty_rate_bytes_per_second: int
    iteration: int
    elapsed: _duration_pb2.Duration
    eta: _duration_pb2.Duration
    eta_low: _duration_pb2.Duration
    eta_high: _duration_pb2.Duration
    convergence: Convergence
    convergence_reason: str
    expected_downtime: _duration_pb2.Duration
    max_downtime: _duration_pb2.Duration
    max_bandwidth: int
    started_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error_message: str
    sequence: int
    actual_downtime: _duration_pb2.Duration
    agent_host: str
    backend: str
    recommendations: _containers.RepeatedCompositeFieldContainer[Recommendation]
    eta_basis: EtaBasis
    postcopy_allowed: bool
    auto_converge_throttle_percent: int
    postcopy_requests: int
    def __init__(self, id: _Optional[str] = ..., domain_uuid: _Optional[str] = ..., domain_name: _Optional[str] = ..., source_host: _Optional[str] = ..., destination_host: _Optional[str] = ..., direction: _Optional[_Union[Direction, str]] = ..., phase: _Optional[_Union[Phase, str]] = ..., memory: _Optional[_Union[Transfer, _Mapping]] = ..., disk: _Optional[_Union[Transfer, _Mapping]] = ..., dirty_rate_bytes_per_second: _Optional[int] = ..., iteration: _Optional[int] = ..., elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., eta_low: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., eta_high: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., convergence: _Optional[_Union[Convergence, str]] = ..., convergence_reason: _Optional[str] = ..., expected_downtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_downtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_bandwidth: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_message: _Optional[str] = ..., sequence: _Optional[int] = ..., actual_downtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., agent_host: _Optional[str] = ..., backend: _Optional[str] = ..., recommendations: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ..., eta_basis: _Optional[_Union[EtaBasis, str]] = ..., postcopy_allowed: _Optional[bool] = ..., auto_converge_throttle_percent: _Optional[int] = ..., postcopy_requests: _Optional[int] = ...) -> None: ...

class SnapshotComplete(_message.Message):
    __slots__ = ("migration_count", "sequence")
    MIGRATION_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    migration_count: int
    sequence: int
    def __init__(self, migration_count: _Optional[int] = ..., sequence: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("time", "sequence")
    TIME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    sequence: int
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class AgentStatus(_message.Message):
    __slots__ = ("host", "backend", "state", "message", "version")
    HOST_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    host: str
    backend: str
    state: HostState
    message: str
    version: str
    def __init__(self, host: _Optional[str] = ..., backend: _Optional[str] = ..., state: _Optional[_Union[HostState, str]] = ..., message: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class WatchMigrationsRequest(_message.Message):
    __slots__ = ("domain_uuid", "domain_name", "include_finished", "heartbeat_interval")
    DOMAIN_UUID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FINISHED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    domain_uuid: str
    domain_name: str
    include_finished: bool
    heartbeat_interval: _duration_pb2.Duration
    def __init__(self, domain_uuid: _Optional[str] = ..., domain_name: _Optional[str] = ..., include_finished: _Optional[bool] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class WatchMigrationsResponse(_message.Message):
    __slots__ = ("migration", "snapshot_complete", "heartbeat", "agent_status")
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    AGENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    snapshot_complete: SnapshotComplete
    heartbeat: Heartbeat
    agent_status: AgentStatus
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ..., snapshot_complete: _Optional[_Union[SnapshotComplete, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., agent_status: _Optional[_Union[AgentStatus, _Mapping]] = ...) -> None: ...

class ListMigrationsRequest(_message.Message):
    __slots__ = ("domain_uuid", "domain_name", "include_finished")
    DOMAIN_UUID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FINISHED_FIELD_NUMBER: _ClassVar[int]
    domain_uuid: str
    domain_name: str
    include_finished: bool
    def __init__(self, domain_uuid: _Optional[str] = ..., domain_name: _Optional[str] = ..., include_finished: _Optional[bool] = ...) -> None: ...

class ListMigrationsResponse(_message.Message):
    __slots__ = ("migrations", "agent_status")
    MIGRATIONS_FIELD_NUMBER: _ClassVar[int]
    AGENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    migrations: _containers.RepeatedCompositeFieldContainer[Migration]
    agent_status: AgentStatus
    def __init__(self, migrations: _Optional[_Iterable[_Union[Migration, _Mapping]]] = ..., agent_status: _Optional[_Union[AgentStatus, _Mapping]] = ...) -> None: ...

class GetMigrationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class AbortMigrationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class AbortMigrationResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class ForceCompleteMigrationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ForceCompleteMigrationResponse(_message.Message):
    __slots__ = ("migration", "method")
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    method: ForceCompleteMethod
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ..., method: _Optional[_Union[ForceCompleteMethod, str]] = ...) -> None: ...

class UpdateMigrationLimitsRequest(_message.Message):
    __slots__ = ("id", "max_downtime", "max_bandwidth")
    ID_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    MAX_BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    id: str
    max_downtime: _duration_pb2.Duration
    max_bandwidth: int
    def __init__(self, id: _Optional[str] = ..., max_downtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_bandwidth: _Optional[int] = ...) -> None: ...

class UpdateMigrationLimitsResponse(_message.Message):
    __slots__ = ("migration",)
    MIGRATION_FIELD_NUMBER: _ClassVar[int]
    migration: Migration
    def __init__(self, migration: _Optional[_Union[Migration, _Mapping]] = ...) -> None: ...

class EstimateMigrationRequest(_message.Message):
    __slots__ = ("domain_uuid", "domain_name", "bandwidth", "max_downtime", "copy_storage", "auto_converge")
    DOMAIN_UUID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_NAME_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    COPY_STORAGE_FIELD_NUMBER: _ClassVar[int]
    AUTO_CONVERGE_FIELD_NUMBER: _ClassVar[int]
    domain_uuid: str
    domain_name: str
    bandwidth: int
    max_downtime: _duration_pb2.Duration
    copy_storage: bool
    auto_converge: bool
    def __init__(self, domain_uuid: _Optional[str] = ..., domain_name: _Optional[str] = ..., bandwidth: _Optional[int] = ..., max_downtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., copy_storage: _Optional[bool] = ..., auto_converge: _Optional[bool] = ...) -> None: ...

class EstimateMigrationResponse(_message.Message):
    __slots__ = ("domain_uuid", "domain_name", "duration", "duration_low", "duration_high", "convergence", "reason", "recommendations", "memory_bytes", "disk_bytes", "bandwidth", "max_downtime", "dirty_rate_bytes_per_second", "hot_set_bytes", "measured_at", "measurement_age", "basis")
    DOMAIN_UUID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_NAME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    DURATION_LOW_FIELD_NUMBER: _ClassVar[int]
    DURATION_HIGH_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    DIRTY_RATE_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    HOT_SET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_AGE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    domain_uuid: str
    domain_name: str
    duration: _duration_pb2.Duration
    duration_low: _duration_pb2.Duration
    duration_high: _duration_pb2.Duration
    convergence: Convergence
    reason: str
    recommendations: _containers.RepeatedCompositeFieldContainer[Recommendation]
    memory_bytes: int
    disk_bytes: int
    bandwidth: int
    max_downtime: _duration_pb2.Duration
    dirty_rate_bytes_per_second: int
    hot_set_bytes: int
    measured_at: _timestamp_pb2.Timestamp
    measurement_age: _duration_pb2.Duration
    basis: EtaBasis
    def __init__(self, domain_uuid: _Optional[str] = ..., domain_name: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., duration_low: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., duration_high: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., convergence: _Optional[_Union[Convergence, str]] = ..., reason: _Optional[str] = ..., recommendations: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ..., memory_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., bandwidth: _Optional[int] = ..., max_downtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., dirty_rate_bytes_per_second: _Optional[int] = ..., hot_set_bytes: _Optional[int] = ..., measured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., measurement_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., basis: _Optional[_Union[EtaBasis, str]] = ...) -> None: ...

class EstimateEvacuationRequest(_message.Message):
    __slots__ = ("domains", "concurrency", "bandwidth", "max_downtime", "auto_converge", "post_copy", "link_bandwidth", "allow_departed", "copy_storage")
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_DOWNTIME_FIELD_NUMBER: _ClassVar[int]
    AUTO_CONVERGE_FIELD_NUMBER: _ClassVar[int]
    POST_COPY_FIELD_NUMBER: _ClassVar[int]
    LINK_BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DEPARTED_FIELD_NUMBER: _ClassVar[int]
    COPY_STORAGE_FIELD_NUMBER: _ClassVar[int]
    domains: _containers.RepeatedScalarFieldContainer[str]
    concurrency: int
    bandwidth: int
    max_downtime: _duration_pb2.Duration
    auto_converge: bool
    post_copy: bool
    link_bandwidth: int
    allow_departed: bool
    copy_storage: bool
    def __init__(self, domains: _Optional[_Iterable[str]] = ..., concurrency: _Optional[int] = ..., bandwidth: _Optional[int] = ..., max_downtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., auto_converge: _Optional[bool] = ..., post_copy: _Optional[bool] = ..., link_bandwidth: _Optional[int] = ..., allow_departed: _Optional[bool] = ..., copy_storage: _Optional[bool] = ...) -> None: ...

class EvacuationEntry(_message.Message):
    __slots__ = ("domain_uuid", "domain_name", "in_flight", "planned", "start_offset", "duration", "duration_low", "duration_high", "convergence", "reason", "recommendations", "basis", "measurement_age", "bandwidth", "order", "post_copy_applied")
    DOMAIN_UUID_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_NAME_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    PLANNED_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    DURATION_LOW_FIELD_NUMBER: _ClassVar[int]
    DURATION_HIGH_FIELD_NUMBER: _ClassVar[int]
    CONVERGENCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_AGE_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    POST_COPY_APPLIED_FIELD_NUMBER: _ClassVar[int]
    domain_uuid: str
    domain_name: str
    in_flight: bool
    planned: bool
    start_offset: _duration_pb2.Duration
    duration: _duration_pb2.Duration
    duration_low: _duration_pb2.Duration
    duration_high: _duration_pb2.Duration
    convergence: Convergence
    reason: str
    recommendations: _containers.RepeatedCompositeFieldContainer[Recommendation]
    basis: EtaBasis
    measurement_age: _duration_pb2.Duration
    bandwidth: int
    order: int
    post_copy_applied: bool
    def __init__(self, domain_uuid: _Optional[str] = ..., domain_name: _Optional[str] = ..., in_flight: _Optional[bool] = ..., planned: _Optional[bool] = ..., start_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., duration_low: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., duration_high: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., convergence: _Optional[_Union[Convergence, str]] = ..., reason: _Optional[str] = ..., recommendations: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ..., basis: _Optional[_Union[EtaBasis, str]] = ..., measurement_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., bandwidth: _Optional[int] = ..., order: _Optional[int] = ..., post_copy_applied: _Optional[bool] = ...) -> None: ...

class EstimateEvacuationResponse(_message.Message):
    __slots__ = ("host", "total", "total_low", "total_high", "empties", "entries", "order", "blocking_domains", "unmeasured_domains", "oldest_measurement_age", "newest_measurement_age", "concurrency", "link_bandwidth", "order_given", "band_method")
    HOST_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LOW_FIELD_NUMBER: _ClassVar[int]
    TOTAL_HIGH_FIELD_NUMBER: _ClassVar[int]
    EMPTIES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    BLOCKING_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    UNMEASURED_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    OLDEST_MEASUREMENT_AGE_FIELD_NUMBER: _ClassVar[int]
    NEWEST_MEASUREMENT_AGE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    LINK_BANDWIDTH_FIELD_NUMBER: _ClassVar[int]
    ORDER_GIVEN_FIELD_NUMBER: _ClassVar[int]
    BAND_METHOD_FIELD_NUMBER: _ClassVar[int]
    host: str
    total: _duration_pb2.Duration
    total_low: _duration_pb2.Duration
    total_high: _duration_pb2.Duration
    empties: bool
    entries: _containers.RepeatedCompositeFieldContainer[EvacuationEntry]
    order: _containers.RepeatedScalarFieldContainer[str]
    blocking_domains: _containers.RepeatedScalarFieldContainer[str]
    unmeasured_domains: _containers.RepeatedScalarFieldContainer[str]
    oldest_measurement_age: _duration_pb2.Duration
    newest_measurement_age: _duration_pb2.Duration
    concurrency: int
    link_bandwidth: int
    order_given: bool
    band_method: str
    def __init__(self, host: _Optional[str] = ..., total: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total_low: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total_high: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., empties: _Optional[bool] = ..., entries: _Optional[_Iterable[_Union[EvacuationEntry, _Mapping]]] = ..., order: _Optional[_Iterable[str]] = ..., blocking_domains: _Optional[_Iterable[str]] = ..., unmeasured_domains: _Optional[_Iterable[str]] = ..., oldest_measurement_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., newest_measurement_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., concurrency: _Optional[int] = ..., link_bandwidth: _Optional[int] = ..., order_given: _Optional[bool] = ..., band_method: _Optional[str] = ...) -> None: ...
