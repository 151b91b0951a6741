"""The group coordinator: classic and KIP-848 consumer groups, and committed offsets.

A deterministic state machine: no asyncio, no clock reads, no I/O. The broker's
`group_runtime` feeds it requests and the time, appends the records it returns to
`__consumer_offsets`, and delivers its responses.
"""

from odradek.coordinator.group.assignors import TopicInfo
from odradek.coordinator.group.classic import ClassicGroup, JoinRequest, SyncRequest
from odradek.coordinator.group.config import GroupConfig
from odradek.coordinator.group.consumer import (
    ConsumerGroup,
    ConsumerGroupOverrides,
    HeartbeatRequest,
)
from odradek.coordinator.group.coordinator import (
    CommitRequest,
    DescribedGroup,
    GroupCoordinator,
    ListedGroup,
    PartitionCommit,
    TxnCommitRequest,
)
from odradek.coordinator.group.records import CoordinatorRecord, partition_for
from odradek.coordinator.group.results import (
    ConsumerGroupHeartbeatResponse,
    DeleteGroupsResponse,
    ErrorResponse,
    JoinGroupResponse,
    LeaveGroupResponse,
    OffsetCommitResponse,
    OffsetDeleteResponse,
    ReadResponse,
    Result,
    SyncGroupResponse,
)

__all__ = [
    "ClassicGroup",
    "CommitRequest",
    "ConsumerGroup",
    "ConsumerGroupHeartbeatResponse",
    "ConsumerGroupOverrides",
    "CoordinatorRecord",
    "DeleteGroupsResponse",
    "DescribedGroup",
    "ErrorResponse",
    "GroupConfig",
    "GroupCoordinator",
    "HeartbeatRequest",
    "JoinGroupResponse",
    "JoinRequest",
    "LeaveGroupResponse",
    "ListedGroup",
    "OffsetCommitResponse",
    "OffsetDeleteResponse",
    "PartitionCommit",
    "ReadResponse",
    "Result",
    "SyncGroupResponse",
    "SyncRequest",
    "TopicInfo",
    "TxnCommitRequest",
    "partition_for",
]
