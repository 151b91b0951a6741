"""Brokers: registrations, broker epochs, heartbeats, sessions, fencing and controlled shutdown.

Kafka's ClusterControlManager plus its BrokerHeartbeatManager. Registrations are metadata (built
by replaying RegisterBrokerRecord, BrokerRegistrationChangeRecord and UnregisterBrokerRecord);
heartbeat times are the active controller's soft state, never written to the log, driven by the
`now_ms` each call passes in.

- A broker's epoch is the offset of its RegisterBrokerRecord in the metadata log (KIP-631), so
  no two registrations ever share one.
- A broker registers fenced. It is unfenced by a heartbeat that does not want fencing once it has
  replayed the log up to its own RegisterBrokerRecord.
- An unfenced broker whose last heartbeat is older than `broker.session.timeout.ms` (9 s by
  default) is fenced by `tick`.
- Controlled shutdown (heartbeat with WantShutDown): an unfenced broker that leads partitions
  enters CONTROLLED_SHUTDOWN (its leaderships move, it leaves every ISR); it is told to shut down
  once it leads nothing and every active broker has replayed past that change. A fenced broker, or
  one that leads nothing, may shut down at once.

The state transition rules are `BrokerHeartbeatManager.calculateNextBrokerState`'s, as a function
(`next_broker_state`).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from kio.schema.errors import ErrorCode

from odradek.controller.messages import BrokerHeartbeatRequest, BrokerRegistrationRequest
from odradek.controller.records import (
    BrokerEndpoint,
    BrokerFeature,
    BrokerRegistrationChangeRecord,
    ControlledShutdownChange,
    FencingChange,
    RegisterBrokerRecord,
    UnregisterBrokerRecord,
)

#: Kafka's broker.session.timeout.ms default.
DEFAULT_SESSION_TIMEOUT_MS = 9000


class MetadataReplayError(RuntimeError):
    """A record that contradicts the state built so far: the metadata log is inconsistent."""


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    """A registered broker as the metadata log says (Kafka's BrokerRegistration)."""

    broker_id: int
    epoch: int
    incarnation_id: uuid.UUID
    listeners: tuple[BrokerEndpoint, ...]
    features: tuple[BrokerFeature, ...]
    rack: str | None
    fenced: bool
    in_controlled_shutdown: bool

    @classmethod
    def from_record(cls, record: RegisterBrokerRecord) -> BrokerRegistration:
        return cls(
            broker_id=record.broker_id,
            epoch=record.broker_epoch,
            incarnation_id=record.incarnation_id,
            listeners=record.end_points,
            features=record.features,
            rack=record.rack,
            fenced=record.fenced,
            in_controlled_shutdown=record.in_controlled_shutdown,
        )

    def apply_change(self, record: BrokerRegistrationChangeRecord) -> BrokerRegistration:
        fenced = self.fenced
        if record.fenced == FencingChange.FENCE:
            fenced = True
        elif record.fenced == FencingChange.UNFENCE:
            fenced = False
        shutting_down = self.in_controlled_shutdown or (
            record.in_controlled_shutdown == ControlledShutdownChange.IN_CONTROLLED_SHUTDOWN
        )
        return replace(self, fenced=fenced, in_controlled_shutdown=shutting_down)

    @property
    def is_active(self) -> bool:
        """May lead and be in an ISR: unfenced and not in controlled shutdown."""
        return not self.fenced and not self.in_controlled_shutdown


def replay_registration_change(
    registrations: dict[int, BrokerRegistration],
    record: RegisterBrokerRecord | UnregisterBrokerRecord | BrokerRegistrationChangeRecord,
) -> None:
    """Apply one broker record to `registrations` (shared by the controller and the image).

    Raises MetadataReplayError when a change or unregistration names an epoch that is not the
    broker's current registration.
    """
    if isinstance(record, RegisterBrokerRecord):
        registrations[record.broker_id] = BrokerRegistration.from_record(record)
        return
    current = registrations.get(record.broker_id)
    if current is None or current.epoch != record.broker_epoch:
        raise MetadataReplayError(
            f"{type(record).__name__} for broker {record.broker_id} epoch {record.broker_epoch}, "
            f"registered epoch {None if current is None else current.epoch}"
        )
    if isinstance(record, UnregisterBrokerRecord):
        del registrations[record.broker_id]
    else:
        registrations[record.broker_id] = current.apply_change(record)


class BrokerControlState(enum.Enum):
    """Kafka's BrokerControlState: where a broker is in its fencing/shutdown life."""

    FENCED = "fenced"
    UNFENCED = "unfenced"
    CONTROLLED_SHUTDOWN = "controlled_shutdown"
    SHUTDOWN_NOW = "shutdown_now"

    @property
    def fenced(self) -> bool:
        return self in (BrokerControlState.FENCED, BrokerControlState.SHUTDOWN_NOW)

    @property
    def in_controlled_shutdown(self) -> bool:
        return self is BrokerControlState.CONTROLLED_SHUTDOWN

    @property
    def should_shut_down(self) -> bool:
        return self is BrokerControlState.SHUTDOWN_NOW


@dataclass(slots=True)
class BrokerHeartbeatState:
    """The active controller's soft state for one broker (not in the log)."""

    last_contact_ms: int
    #: The metadata offset the broker reported in its last heartbeat.
    metadata_offset: int = -1
    #: The log offset after which the broker may shut down; -1 when not shutting down.
    controlled_shutdown_offset: int = -1


def next_broker_state(
    current: BrokerControlState,
    request: BrokerHeartbeatRequest,
    register_record_offset: int,
    has_leaderships: bool,
    controlled_shutdown_offset: int,
    lowest_active_offset: float,
) -> BrokerControlState:
    """Kafka's BrokerHeartbeatManager.calculateNextBrokerState, as a pure function."""
    state = BrokerControlState
    if current is state.FENCED:
        if request.want_shut_down:
            return state.SHUTDOWN_NOW
        if not request.want_fence and request.current_metadata_offset >= register_record_offset:
            return state.UNFENCED
        return state.FENCED
    if current is state.UNFENCED:
        if request.want_fence:
            return state.SHUTDOWN_NOW if request.want_shut_down else state.FENCED
        if request.want_shut_down:
            return state.CONTROLLED_SHUTDOWN if has_leaderships else state.SHUTDOWN_NOW
        return state.UNFENCED
    if current is state.CONTROLLED_SHUTDOWN:
        if has_leaderships:
            return state.CONTROLLED_SHUTDOWN
        if 0 <= controlled_shutdown_offset <= lowest_active_offset:
            return state.SHUTDOWN_NOW
        return state.CONTROLLED_SHUTDOWN
    return state.SHUTDOWN_NOW


class ClusterControlManager:
    """Registered brokers and their sessions (see the module docstring)."""

    def __init__(
        self, cluster_id: str, session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS
    ) -> None:
        self.cluster_id = cluster_id
        self.session_timeout_ms = session_timeout_ms
        self.registrations: dict[int, BrokerRegistration] = {}
        #: broker id -> offset of its current RegisterBrokerRecord.
        self.register_record_offsets: dict[int, int] = {}
        self.heartbeats: dict[int, BrokerHeartbeatState] = {}

    # -- queries ---------------------------------------------------------------------------

    def registration(self, broker_id: int) -> BrokerRegistration | None:
        return self.registrations.get(broker_id)

    def is_active(self, broker_id: int) -> bool:
        registration = self.registrations.get(broker_id)
        return registration is not None and registration.is_active

    def active_brokers(self) -> list[int]:
        """Ids of the brokers that may host new replicas, ascending."""
        return sorted(b for b, r in self.registrations.items() if r.is_active)

    def check_broker_epoch(self, broker_id: int, broker_epoch: int) -> ErrorCode:
        """STALE_BROKER_EPOCH unless `broker_epoch` is the broker's current registration's
        (Kafka's ClusterControlManager.checkBrokerEpoch), else NONE."""
        registration = self.registrations.get(broker_id)
        if registration is None or registration.epoch != broker_epoch:
            return ErrorCode.stale_broker_epoch
        return ErrorCode.none

    def has_valid_session(self, broker_id: int, now_ms: int) -> bool:
        """An unfenced broker that heartbeated within the session timeout."""
        registration = self.registrations.get(broker_id)
        heartbeat = self.heartbeats.get(broker_id)
        if registration is None or registration.fenced or heartbeat is None:
            return False
        return heartbeat.last_contact_ms + self.session_timeout_ms >= now_ms

    def current_state(self, broker_id: int) -> BrokerControlState:
        registration = self.registrations[broker_id]
        heartbeat = self.heartbeats.get(broker_id)
        shutting_down = registration.in_controlled_shutdown or (
            heartbeat is not None and heartbeat.controlled_shutdown_offset >= 0
        )
        if registration.fenced:
            return BrokerControlState.FENCED
        if shutting_down:
            return BrokerControlState.CONTROLLED_SHUTDOWN
        return BrokerControlState.UNFENCED

    def lowest_active_offset(self) -> float:
        """The smallest metadata offset reported by an active broker (inf when there is none)."""
        offsets = [
            heartbeat.metadata_offset
            for broker_id, heartbeat in self.heartbeats.items()
            if self.is_active(broker_id) and heartbeat.controlled_shutdown_offset < 0
        ]
        return min(offsets) if offsets else float("inf")

    def expired_brokers(self, now_ms: int) -> list[int]:
        """Unfenced brokers whose session timed out, oldest contact first."""
        expired = [
            (heartbeat.last_contact_ms, broker_id)
            for broker_id, heartbeat in self.heartbeats.items()
            if not self.registrations[broker_id].fenced
            and heartbeat.last_contact_ms + self.session_timeout_ms < now_ms
        ]
        return [broker_id for _, broker_id in sorted(expired)]

    # -- writes ----------------------------------------------------------------------------

    def register_broker(
        self,
        request: BrokerRegistrationRequest,
        new_broker_epoch: int,
        finalized_features: Mapping[str, int],
        now_ms: int,
    ) -> tuple[ErrorCode, str | None, RegisterBrokerRecord | None]:
        """Validate a BrokerRegistration and build its RegisterBrokerRecord (fenced).

        Errors (Kafka's): INCONSISTENT_CLUSTER_ID; DUPLICATE_BROKER_REGISTRATION when another
        incarnation of the id holds a live session; UNSUPPORTED_VERSION when the broker does not
        support a finalized feature level.
        """
        if request.cluster_id != self.cluster_id:
            return (
                ErrorCode.inconsistent_cluster_id,
                f"Expected cluster ID {self.cluster_id}, but got cluster ID {request.cluster_id}",
                None,
            )
        existing = self.registrations.get(request.broker_id)
        if (
            existing is not None
            and existing.incarnation_id != request.incarnation_id
            and self.has_valid_session(request.broker_id, now_ms)
        ):
            return (
                ErrorCode.duplicate_broker_registration,
                "Another broker is registered with that broker id.",
                None,
            )
        supported = {feature.name: feature for feature in request.features}
        for name, level in finalized_features.items():
            feature = supported.get(name)
            if feature is None and level > 0:
                return (
                    ErrorCode.unsupported_version,
                    f"Unable to register because the broker does not support {name}",
                    None,
                )
            if feature is not None and not (
                feature.min_supported_version <= level <= feature.max_supported_version
            ):
                return (
                    ErrorCode.unsupported_version,
                    f"Unable to register because the broker does not support version {level} "
                    f"of {name}",
                    None,
                )
        record = RegisterBrokerRecord(
            broker_id=request.broker_id,
            broker_epoch=new_broker_epoch,
            incarnation_id=request.incarnation_id,
            end_points=tuple(
                BrokerEndpoint(lst.name, lst.host, lst.port, lst.security_protocol)
                for lst in request.listeners
            ),
            features=tuple(
                BrokerFeature(f.name, f.min_supported_version, f.max_supported_version)
                for f in request.features
            ),
            rack=request.rack,
            fenced=True,
        )
        return ErrorCode.none, None, record

    def fence_record(self, broker_id: int) -> BrokerRegistrationChangeRecord:
        return BrokerRegistrationChangeRecord(
            broker_id=broker_id,
            broker_epoch=self.registrations[broker_id].epoch,
            fenced=FencingChange.FENCE,
        )

    def unfence_record(self, broker_id: int) -> BrokerRegistrationChangeRecord:
        return BrokerRegistrationChangeRecord(
            broker_id=broker_id,
            broker_epoch=self.registrations[broker_id].epoch,
            fenced=FencingChange.UNFENCE,
        )

    def controlled_shutdown_record(self, broker_id: int) -> BrokerRegistrationChangeRecord:
        return BrokerRegistrationChangeRecord(
            broker_id=broker_id,
            broker_epoch=self.registrations[broker_id].epoch,
            in_controlled_shutdown=ControlledShutdownChange.IN_CONTROLLED_SHUTDOWN,
        )

    # -- soft state ------------------------------------------------------------------------

    def touch(self, broker_id: int, now_ms: int, fenced: bool, metadata_offset: int) -> None:
        """A heartbeat arrived (Kafka's BrokerHeartbeatManager.touch)."""
        heartbeat = self.heartbeats.get(broker_id)
        if heartbeat is None:
            heartbeat = self.heartbeats[broker_id] = BrokerHeartbeatState(now_ms)
        heartbeat.last_contact_ms = now_ms
        heartbeat.metadata_offset = metadata_offset
        if fenced:
            # A fenced broker leaves controlled shutdown; its next heartbeat shuts it down.
            heartbeat.controlled_shutdown_offset = -1

    def maybe_update_controlled_shutdown_offset(self, broker_id: int, offset: int) -> None:
        heartbeat = self.heartbeats[broker_id]
        if heartbeat.controlled_shutdown_offset < 0:
            heartbeat.controlled_shutdown_offset = offset

    def track_all(self, now_ms: int) -> None:
        """Give every registered broker without a session one starting now (a controller that
        just rebuilt its state from the log knows no heartbeat times)."""
        for broker_id in self.registrations:
            if broker_id not in self.heartbeats:
                self.heartbeats[broker_id] = BrokerHeartbeatState(now_ms)

    # -- replay ----------------------------------------------------------------------------

    def replay(
        self,
        record: RegisterBrokerRecord | UnregisterBrokerRecord | BrokerRegistrationChangeRecord,
        offset: int,
    ) -> None:
        replay_registration_change(self.registrations, record)
        if isinstance(record, RegisterBrokerRecord):
            self.register_record_offsets[record.broker_id] = offset
            # A new registration starts a new session.
            self.heartbeats.pop(record.broker_id, None)
        elif isinstance(record, UnregisterBrokerRecord):
            self.register_record_offsets.pop(record.broker_id, None)
            self.heartbeats.pop(record.broker_id, None)
