import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LimitStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_STATUS_UNSPECIFIED: _ClassVar[LimitStatus]
    LIMIT_STATUS_OK: _ClassVar[LimitStatus]
    LIMIT_STATUS_WARN: _ClassVar[LimitStatus]
    LIMIT_STATUS_BREACH: _ClassVar[LimitStatus]
    LIMIT_STATUS_UNKNOWN: _ClassVar[LimitStatus]

class ComplianceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPLIANCE_STATUS_UNSPECIFIED: _ClassVar[ComplianceStatus]
    COMPLIANCE_STATUS_COMPLIANT: _ClassVar[ComplianceStatus]
    COMPLIANCE_STATUS_WARNING: _ClassVar[ComplianceStatus]
    COMPLIANCE_STATUS_BREACH: _ClassVar[ComplianceStatus]
    COMPLIANCE_STATUS_UNKNOWN: _ClassVar[ComplianceStatus]

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_BUY: _ClassVar[Side]
    SIDE_SELL: _ClassVar[Side]

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]

class TradingStateValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRADING_STATE_UNSPECIFIED: _ClassVar[TradingStateValue]
    TRADING_STATE_ACTIVE: _ClassVar[TradingStateValue]
    TRADING_STATE_REDUCING: _ClassVar[TradingStateValue]
    TRADING_STATE_HALTED: _ClassVar[TradingStateValue]
LIMIT_STATUS_UNSPECIFIED: LimitStatus
LIMIT_STATUS_OK: LimitStatus
LIMIT_STATUS_WARN: LimitStatus
LIMIT_STATUS_BREACH: LimitStatus
LIMIT_STATUS_UNKNOWN: LimitStatus
COMPLIANCE_STATUS_UNSPECIFIED: ComplianceStatus
COMPLIANCE_STATUS_COMPLIANT: ComplianceStatus
COMPLIANCE_STATUS_WARNING: ComplianceStatus
COMPLIANCE_STATUS_BREACH: ComplianceStatus
COMPLIANCE_STATUS_UNKNOWN: ComplianceStatus
SIDE_UNSPECIFIED: Side
SIDE_BUY: Side
SIDE_SELL: Side
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_DENY: Decision
TRADING_STATE_UNSPECIFIED: TradingStateValue
TRADING_STATE_ACTIVE: TradingStateValue
TRADING_STATE_REDUCING: TradingStateValue
TRADING_STATE_HALTED: TradingStateValue

class GetRiskStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SourceFreshness(_message.Message):
    __slots__ = ("source", "kind", "venue", "account", "ok", "as_of", "age_seconds", "stale", "error_code")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VENUE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    source: str
    kind: str
    venue: str
    account: str
    ok: bool
    as_of: _timestamp_pb2.Timestamp
    age_seconds: float
    stale: bool
    error_code: str
    def __init__(self, source: _Optional[str] = ..., kind: _Optional[str] = ..., venue: _Optional[str] = ..., account: _Optional[str] = ..., ok: _Optional[bool] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., age_seconds: _Optional[float] = ..., stale: _Optional[bool] = ..., error_code: _Optional[str] = ...) -> None: ...

class RiskStatus(_message.Message):
    __slots__ = ("status", "as_of", "equity", "gross_exposure", "net_exposure", "sources", "limit_config_version", "evaluation_source", "status_counts", "config_document_version", "config_source")
    class StatusCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    EQUITY_FIELD_NUMBER: _ClassVar[int]
    GROSS_EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    NET_EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DOCUMENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    status: ComplianceStatus
    as_of: _timestamp_pb2.Timestamp
    equity: float
    gross_exposure: float
    net_exposure: float
    sources: _containers.RepeatedCompositeFieldContainer[SourceFreshness]
    limit_config_version: str
    evaluation_source: str
    status_counts: _containers.ScalarMap[str, int]
    config_document_version: str
    config_source: str
    def __init__(self, status: _Optional[_Union[ComplianceStatus, str]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., equity: _Optional[float] = ..., gross_exposure: _Optional[float] = ..., net_exposure: _Optional[float] = ..., sources: _Optional[_Iterable[_Union[SourceFreshness, _Mapping]]] = ..., limit_config_version: _Optional[str] = ..., evaluation_source: _Optional[str] = ..., status_counts: _Optional[_Mapping[str, int]] = ..., config_document_version: _Optional[str] = ..., config_source: _Optional[str] = ...) -> None: ...

class ListLimitStatusRequest(_message.Message):
    __slots__ = ("statuses", "scope_prefix", "limit_id")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    SCOPE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_ID_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[LimitStatus]
    scope_prefix: str
    limit_id: str
    def __init__(self, statuses: _Optional[_Iterable[_Union[LimitStatus, str]]] = ..., scope_prefix: _Optional[str] = ..., limit_id: _Optional[str] = ...) -> None: ...

class LimitStatusEntry(_message.Message):
    __slots__ = ("limit_id", "kind", "scope", "status", "value", "warn", "breach", "utilisation", "as_of", "reason", "config_version", "source_event_time")
    LIMIT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WARN_FIELD_NUMBER: _ClassVar[int]
    BREACH_FIELD_NUMBER: _ClassVar[int]
    UTILISATION_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    limit_id: str
    kind: str
    scope: str
    status: LimitStatus
    value: float
    warn: float
    breach: float
    utilisation: float
    as_of: _timestamp_pb2.Timestamp
    reason: str
    config_version: str
    source_event_time: _timestamp_pb2.Timestamp
    def __init__(self, limit_id: _Optional[str] = ..., kind: _Optional[str] = ..., scope: _Optional[str] = ..., status: _Optional[_Union[LimitStatus, str]] = ..., value: _Optional[float] = ..., warn: _Optional[float] = ..., breach: _Optional[float] = ..., utilisation: _Optional[float] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., config_version: _Optional[str] = ..., source_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLimitStatusResponse(_message.Message):
    __slots__ = ("limits", "as_of", "limit_config_version", "evaluation_source")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    LIMIT_CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.RepeatedCompositeFieldContainer[LimitStatusEntry]
    as_of: _timestamp_pb2.Timestamp
    limit_config_version: str
    evaluation_source: str
    def __init__(self, limits: _Optional[_Iterable[_Union[LimitStatusEntry, _Mapping]]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit_config_version: _Optional[str] = ..., evaluation_source: _Optional[str] = ...) -> None: ...

class WatchAlertsRequest(_message.Message):
    __slots__ = ("cursor", "heartbeat_interval_s")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    heartbeat_interval_s: float
    def __init__(self, cursor: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class AlertNotification(_message.Message):
    __slots__ = ("idempotency_key", "fingerprint", "kind", "status", "severity", "limit_id", "limit_kind", "scope", "value", "warn", "breach", "utilisation", "config_version", "correlation_id", "episode", "detected_at", "source_event_time", "reason")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_KIND_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    WARN_FIELD_NUMBER: _ClassVar[int]
    BREACH_FIELD_NUMBER: _ClassVar[int]
    UTILISATION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    fingerprint: str
    kind: str
    status: LimitStatus
    severity: str
    limit_id: str
    limit_kind: str
    scope: str
    value: float
    warn: float
    breach: float
    utilisation: float
    config_version: str
    correlation_id: str
    episode: int
    detected_at: _timestamp_pb2.Timestamp
    source_event_time: _timestamp_pb2.Timestamp
    reason: str
    def __init__(self, idempotency_key: _Optional[str] = ..., fingerprint: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[_Union[LimitStatus, str]] = ..., severity: _Optional[str] = ..., limit_id: _Optional[str] = ..., limit_kind: _Optional[str] = ..., scope: _Optional[str] = ..., value: _Optional[float] = ..., warn: _Optional[float] = ..., breach: _Optional[float] = ..., utilisation: _Optional[float] = ..., config_version: _Optional[str] = ..., correlation_id: _Optional[str] = ..., episode: _Optional[int] = ..., detected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("at",)
    AT_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AlertEvent(_message.Message):
    __slots__ = ("cursor", "alert", "heartbeat")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    alert: AlertNotification
    heartbeat: Heartbeat
    def __init__(self, cursor: _Optional[str] = ..., alert: _Optional[_Union[AlertNotification, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class CheckOrderRequest(_message.Message):
    __slots__ = ("venue", "account", "instrument", "side", "quantity", "price", "client_order_id", "position_side")
    VENUE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    INSTRUMENT_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_SIDE_FIELD_NUMBER: _ClassVar[int]
    venue: str
    account: str
    instrument: str
    side: Side
    quantity: float
    price: float
    client_order_id: str
    position_side: str
    def __init__(self, venue: _Optional[str] = ..., account: _Optional[str] = ..., instrument: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., quantity: _Optional[float] = ..., price: _Optional[float] = ..., client_order_id: _Optional[str] = ..., position_side: _Optional[str] = ...) -> None: ...

class ProjectedLimit(_message.Message):
    __slots__ = ("limit", "current_utilisation")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_UTILISATION_FIELD_NUMBER: _ClassVar[int]
    limit: LimitStatusEntry
    current_utilisation: float
    def __init__(self, limit: _Optional[_Union[LimitStatusEntry, _Mapping]] = ..., current_utilisation: _Optional[float] = ...) -> None: ...

class CheckOrderResponse(_message.Message):
    __slots__ = ("decision", "allowed", "reasons", "projected", "as_of", "limit_config_version", "evaluation_source", "reason_codes", "trading_state")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    PROJECTED_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    LIMIT_CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REASON_CODES_FIELD_NUMBER: _ClassVar[int]
    TRADING_STATE_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    allowed: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    projected: _containers.RepeatedCompositeFieldContainer[ProjectedLimit]
    as_of: _timestamp_pb2.Timestamp
    limit_config_version: str
    evaluation_source: str
    reason_codes: _containers.RepeatedScalarFieldContainer[str]
    trading_state: TradingStateValue
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., allowed: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ..., projected: _Optional[_Iterable[_Union[ProjectedLimit, _Mapping]]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit_config_version: _Optional[str] = ..., evaluation_source: _Optional[str] = ..., reason_codes: _Optional[_Iterable[str]] = ..., trading_state: _Optional[_Union[TradingStateValue, str]] = ...) -> None: ...

class AcknowledgeAlertRequest(_message.Message):
    __slots__ = ("key", "comment", "author")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    key: str
    comment: str
    author: str
    def __init__(self, key: _Optional[str] = ..., comment: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class Acknowledgement(_message.Message):
    __slots__ = ("fingerprint", "episode", "status", "acked_by", "acked_at", "comment", "limit_id", "scope", "correlation_id")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EPISODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACKED_BY_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    episode: int
    status: LimitStatus
    acked_by: str
    acked_at: _timestamp_pb2.Timestamp
    comment: str
    limit_id: str
    scope: str
    correlation_id: str
    def __init__(self, fingerprint: _Optional[str] = ..., episode: _Optional[int] = ..., status: _Optional[_Union[LimitStatus, str]] = ..., acked_by: _Optional[str] = ..., acked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., comment: _Optional[str] = ..., limit_id: _Optional[str] = ..., scope: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class SilenceMatcher(_message.Message):
    __slots__ = ("name", "op", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    op: str
    value: str
    def __init__(self, name: _Optional[str] = ..., op: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class CreateSilenceRequest(_message.Message):
    __slots__ = ("matchers", "duration_seconds", "starts_at", "ends_at", "comment", "author")
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    matchers: _containers.RepeatedScalarFieldContainer[str]
    duration_seconds: float
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    comment: str
    author: str
    def __init__(self, matchers: _Optional[_Iterable[str]] = ..., duration_seconds: _Optional[float] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., comment: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class Silence(_message.Message):
    __slots__ = ("id", "matchers", "starts_at", "ends_at", "created_by", "comment", "expired_at", "active")
    ID_FIELD_NUMBER: _ClassVar[int]
    MATCHERS_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    id: str
    matchers: _containers.RepeatedCompositeFieldContainer[SilenceMatcher]
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    created_by: str
    comment: str
    expired_at: _timestamp_pb2.Timestamp
    active: bool
    def __init__(self, id: _Optional[str] = ..., matchers: _Optional[_Iterable[_Union[SilenceMatcher, _Mapping]]] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., comment: _Optional[str] = ..., expired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active: _Optional[bool] = ...) -> None: ...

class ExpireSilenceRequest(_message.Message):
    __slots__ = ("id", "author")
    ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    author: str
    def __init__(self, id: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...

class ListAlertControlsRequest(_message.Message):
    __slots__ = ("include_inactive",)
    INCLUDE_INACTIVE_FIELD_NUMBER: _ClassVar[int]
    include_inactive: bool
    def __init__(self, include_inactive: _Optional[bool] = ...) -> None: ...

class AlertControls(_message.Message):
    __slots__ = ("silences", "acknowledgements")
    SILENCES_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    silences: _containers.RepeatedCompositeFieldContainer[Silence]
    acknowledgements: _containers.RepeatedCompositeFieldContainer[Acknowledgement]
    def __init__(self, silences: _Optional[_Iterable[_Union[Silence, _Mapping]]] = ..., acknowledgements: _Optional[_Iterable[_Union[Acknowledgement, _Mapping]]] = ...) -> None: ...

class GetTradingStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScopeTradingState(_message.Message):
    __slots__ = ("scope", "state", "set_by_scope", "origin", "cause")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SET_BY_SCOPE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    scope: str
    state: TradingStateValue
    set_by_scope: str
    origin: str
    cause: str
    def __init__(self, scope: _Optional[str] = ..., state: _Optional[_Union[TradingStateValue, str]] = ..., set_by_scope: _Optional[str] = ..., origin: _Optional[str] = ..., cause: _Optional[str] = ...) -> None: ...

class ManualTradingState(_message.Message):
    __slots__ = ("scope", "state", "changed_by", "reason")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    scope: str
    state: TradingStateValue
    changed_by: str
    reason: str
    def __init__(self, scope: _Optional[str] = ..., state: _Optional[_Union[TradingStateValue, str]] = ..., changed_by: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TradingStates(_message.Message):
    __slots__ = ("states", "manual")
    STATES_FIELD_NUMBER: _ClassVar[int]
    MANUAL_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedCompositeFieldContainer[ScopeTradingState]
    manual: _containers.RepeatedCompositeFieldContainer[ManualTradingState]
    def __init__(self, states: _Optional[_Iterable[_Union[ScopeTradingState, _Mapping]]] = ..., manual: _Optional[_Iterable[_Union[ManualTradingState, _Mapping]]] = ...) -> None: ...

class SetTradingStateRequest(_message.Message):
    __slots__ = ("scope", "state", "reason", "author")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    scope: str
    state: TradingStateValue
    reason: str
    author: str
    def __init__(self, scope: _Optional[str] = ..., state: _Optional[_Union[TradingStateValue, str]] = ..., reason: _Optional[str] = ..., author: _Optional[str] = ...) -> None: ...
