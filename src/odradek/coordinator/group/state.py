"""Group states and their valid previous states, as Kafka's ClassicGroupState and
ConsumerGroup.ConsumerGroupState list them. The same tables check every transition."""

from __future__ import annotations

import enum


class IllegalStateTransitionError(RuntimeError):
    """A transition the table does not allow: a coordinator bug, never a client error."""


class ClassicGroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


# state -> the states it may be entered from
CLASSIC_VALID_PREVIOUS_STATES: dict[ClassicGroupState, frozenset[ClassicGroupState]] = {
    ClassicGroupState.EMPTY: frozenset({ClassicGroupState.PREPARING_REBALANCE}),
    ClassicGroupState.PREPARING_REBALANCE: frozenset(
        {
            ClassicGroupState.STABLE,
            ClassicGroupState.COMPLETING_REBALANCE,
            ClassicGroupState.EMPTY,
        }
    ),
    ClassicGroupState.COMPLETING_REBALANCE: frozenset({ClassicGroupState.PREPARING_REBALANCE}),
    ClassicGroupState.STABLE: frozenset({ClassicGroupState.COMPLETING_REBALANCE}),
    ClassicGroupState.DEAD: frozenset(
        {
            ClassicGroupState.STABLE,
            ClassicGroupState.PREPARING_REBALANCE,
            ClassicGroupState.COMPLETING_REBALANCE,
            ClassicGroupState.EMPTY,
            ClassicGroupState.DEAD,
        }
    ),
}


def check_classic_transition(current: ClassicGroupState, target: ClassicGroupState) -> None:
    if current not in CLASSIC_VALID_PREVIOUS_STATES[target]:
        raise IllegalStateTransitionError(
            f"classic group cannot go from {current.value} to {target.value}"
        )


class ConsumerGroupState(enum.Enum):
    """Derived from the members and epochs, never set directly (as in Kafka)."""

    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


class MemberState(enum.Enum):
    """A KIP-848 member's reconciliation state (Kafka's MemberState)."""

    STABLE = "stable"
    # Must revoke partitions before it gets the target epoch.
    UNREVOKED_PARTITIONS = "unrevoked_partitions"
    # At the target epoch, waiting for partitions other members still own.
    UNRELEASED_PARTITIONS = "unreleased_partitions"
