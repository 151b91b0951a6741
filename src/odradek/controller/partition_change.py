"""A partition's registration and the one place its leader, ISR and epochs change.

`PartitionRegistration` is Kafka's class of that name: replicas, ISR, leader, leader epoch,
partition epoch and LeaderRecoveryState (KIP-704). It changes only by replaying a
`PartitionChangeRecord` (`merge`): the partition epoch goes up by one on every change, the leader
epoch only when the leader field is set (to a broker or to NO_LEADER).

`PartitionChangeBuilder` is Kafka's PartitionChangeBuilder without reassignment and without
eligible leader replicas (KIP-966): given a target ISR, an election type and the rule that says
which brokers may lead (`is_acceptable_leader`, i.e. registered, unfenced and not shutting down),
it returns the PartitionChangeRecord to append, or None if nothing changes. Every ISR, leader and
recovery-state change in the controller goes through it, so the rules live once:

- keep the current leader while it is in the target ISR and acceptable; otherwise take the first
  replica (in replica order) that is in the target ISR and acceptable — a clean election;
- with Election.PREFERRED, try the first replica first;
- with Election.UNCLEAN and no clean candidate, take the first acceptable replica outside the ISR:
  the ISR becomes just that leader and the partition RECOVERING (data may be lost);
- the ISR is never set empty: without ELR, Kafka keeps the last ISR member (the partition goes
  leaderless instead) so that this replica, which has every committed record, can lead again
  when it comes back;
- the leader epoch is not bumped for an ISR shrink (Kafka's behaviour from metadata.version 3.6).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from odradek.controller.records import (
    NO_LEADER,
    NO_LEADER_CHANGE,
    NO_LEADER_RECOVERY_CHANGE,
    PartitionChangeRecord,
    PartitionRecord,
)


class LeaderRecoveryState(enum.IntEnum):
    """KIP-704: RECOVERING after an unclean election, until the leader says it has recovered."""

    RECOVERED = 0
    RECOVERING = 1


class Election(enum.Enum):
    """How the builder picks a leader (Kafka's PartitionChangeBuilder.Election)."""

    #: Prefer the first replica if it may lead, else keep or pick any clean leader.
    PREFERRED = "preferred"
    #: Keep the current leader if it may lead, else any clean leader.
    ONLINE = "online"
    #: As ONLINE, then, if no clean leader exists, any acceptable replica (data may be lost).
    UNCLEAN = "unclean"


@dataclass(frozen=True, slots=True)
class PartitionRegistration:
    """The controller's and every broker's view of one partition."""

    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader: int
    leader_recovery_state: LeaderRecoveryState = LeaderRecoveryState.RECOVERED
    leader_epoch: int = 0
    partition_epoch: int = 0

    @classmethod
    def from_record(cls, record: PartitionRecord) -> PartitionRegistration:
        return cls(
            replicas=record.replicas,
            isr=record.isr,
            leader=record.leader,
            leader_recovery_state=LeaderRecoveryState(record.leader_recovery_state),
            leader_epoch=record.leader_epoch,
            partition_epoch=record.partition_epoch,
        )

    def to_record(self, topic_id: uuid.UUID, partition_id: int) -> PartitionRecord:
        return PartitionRecord(
            topic_id=topic_id,
            partition_id=partition_id,
            replicas=self.replicas,
            isr=self.isr,
            leader=self.leader,
            leader_recovery_state=int(self.leader_recovery_state),
            leader_epoch=self.leader_epoch,
            partition_epoch=self.partition_epoch,
        )

    def merge(self, change: PartitionChangeRecord) -> PartitionRegistration:
        """The registration after `change` (Kafka's PartitionRegistration.merge)."""
        leader, leader_epoch = self.leader, self.leader_epoch
        if change.leader != NO_LEADER_CHANGE:
            leader, leader_epoch = change.leader, self.leader_epoch + 1
        recovery = self.leader_recovery_state
        if change.leader_recovery_state != NO_LEADER_RECOVERY_CHANGE:
            recovery = LeaderRecoveryState(change.leader_recovery_state)
        return replace(
            self,
            replicas=self.replicas if change.replicas is None else change.replicas,
            isr=self.isr if change.isr is None else change.isr,
            leader=leader,
            leader_recovery_state=recovery,
            leader_epoch=leader_epoch,
            partition_epoch=self.partition_epoch + 1,
        )

    @property
    def has_leader(self) -> bool:
        return self.leader != NO_LEADER

    @property
    def preferred_replica(self) -> int:
        return self.replicas[0] if self.replicas else NO_LEADER


def copy_without(replicas: Iterable[int], *removed: int) -> tuple[int, ...]:
    """`replicas` in order without `removed` (Kafka's Replicas.copyWithout)."""
    return tuple(replica for replica in replicas if replica not in removed)


def is_valid_isr(replicas: tuple[int, ...], isr: Iterable[int]) -> bool:
    """Every ISR member is a replica, none twice, none negative (Kafka's Replicas.validateIsr)."""
    seen: set[int] = set()
    for member in isr:
        if member < 0 or member in seen or member not in replicas:
            return False
        seen.add(member)
    return True


class PartitionChangeBuilder:
    """Computes the PartitionChangeRecord that moves a partition to a target ISR, electing a
    leader as needed (Kafka's PartitionChangeBuilder; see the module docstring for the rules).
    """

    def __init__(
        self,
        partition: PartitionRegistration,
        topic_id: uuid.UUID,
        partition_id: int,
        is_acceptable_leader: Callable[[int], bool],
    ) -> None:
        self.partition = partition
        self.topic_id = topic_id
        self.partition_id = partition_id
        self.is_acceptable_leader = is_acceptable_leader
        self.target_isr: tuple[int, ...] = partition.isr
        self.election = Election.ONLINE
        self.target_leader_recovery_state = partition.leader_recovery_state

    def set_target_isr(self, isr: Iterable[int]) -> PartitionChangeBuilder:
        self.target_isr = tuple(isr)
        return self

    def set_election(self, election: Election) -> PartitionChangeBuilder:
        self.election = election
        return self

    def set_target_leader_recovery_state(
        self, state: LeaderRecoveryState
    ) -> PartitionChangeBuilder:
        self.target_leader_recovery_state = state
        return self

    def _is_valid_new_leader(self, replica: int) -> bool:
        return replica in self.target_isr and self.is_acceptable_leader(replica)

    def _elect(self) -> tuple[int, bool]:
        """(leader, unclean) — NO_LEADER when no replica may lead."""
        replicas = self.partition.replicas
        if (
            self.election is Election.PREFERRED
            and replicas
            and self._is_valid_new_leader(replicas[0])
        ):
            return replicas[0], False
        if self._is_valid_new_leader(self.partition.leader):
            return self.partition.leader, False
        for replica in replicas:
            if self._is_valid_new_leader(replica):
                return replica, False
        if self.election is Election.UNCLEAN:
            for replica in replicas:
                if self.is_acceptable_leader(replica):
                    return replica, True
        return NO_LEADER, False

    def build(self) -> PartitionChangeRecord | None:
        """The change to append, or None when the partition would stay as it is."""
        partition = self.partition
        isr: tuple[int, ...] | None = None
        leader = NO_LEADER_CHANGE
        recovery = NO_LEADER_RECOVERY_CHANGE
        elected, unclean = self._elect()
        if elected != partition.leader:
            leader = elected
            if unclean:
                # An unclean election forces the ISR to the new leader alone (KIP-704).
                isr = (elected,)
                if partition.leader_recovery_state is not LeaderRecoveryState.RECOVERING:
                    recovery = int(LeaderRecoveryState.RECOVERING)
        if isr is None and self.target_isr and self.target_isr != partition.isr:
            isr = self.target_isr
        if self.target_leader_recovery_state is not partition.leader_recovery_state:
            recovery = int(self.target_leader_recovery_state)
        if isr is None and leader == NO_LEADER_CHANGE and recovery == NO_LEADER_RECOVERY_CHANGE:
            return None
        return PartitionChangeRecord(
            topic_id=self.topic_id,
            partition_id=self.partition_id,
            isr=isr,
            leader=leader,
            leader_recovery_state=recovery,
        )
