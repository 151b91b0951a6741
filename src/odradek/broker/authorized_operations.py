"""The `authorized_operations` bitfields of Metadata, DescribeCluster, DescribeGroups,
ConsumerGroupDescribe and DescribeTopicPartitions.

With no authorizer configured (always, on Odradek) Kafka grants every operation the resource
type supports (AclEntry.supportedOperations) and packs their AclOperation codes into a 32-bit
field (Utils.to32BitField: bit `code` set). When the request did not ask for them, the field
is Int.MinValue.
"""

from __future__ import annotations

# Kafka's AclOperation codes.
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = 3, 4, 5, 6, 7, 8
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 9, 10, 11, 12

OMITTED = -(2**31)


def _bitfield(*operations: int) -> int:
    return sum(1 << operation for operation in set(operations))


# 8 operations: 3576.
TOPIC_OPERATIONS = _bitfield(
    READ, WRITE, CREATE, DESCRIBE, DELETE, ALTER, DESCRIBE_CONFIGS, ALTER_CONFIGS
)
# 7 operations: 8096.
CLUSTER_OPERATIONS = _bitfield(
    CREATE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALTER, DESCRIBE
)
# 5 operations (group configs added DESCRIBE_CONFIGS and ALTER_CONFIGS): 3400.
GROUP_OPERATIONS = _bitfield(READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS)


def topic_operations(requested: bool) -> int:
    return TOPIC_OPERATIONS if requested else OMITTED


def cluster_operations(requested: bool) -> int:
    return CLUSTER_OPERATIONS if requested else OMITTED


def group_operations(requested: bool) -> int:
    return GROUP_OPERATIONS if requested else OMITTED
