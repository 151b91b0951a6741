"""The answers of a cluster member (a broker with a controller): Metadata and DescribeCluster from
its MetadataImage, and CreateTopics / DeleteTopics / CreatePartitions forwarded to the
controller, FindCoordinator from the leaders of `__consumer_offsets` / `__transaction_state`
(created through the controller on first use, as Kafka's broker auto-creates them). Each handler
in `handlers/` calls in here first when `context.cluster` is set, so a single broker never runs
this code.

Kafka's KRaftMetadataCache decides the details: only unfenced brokers are listed; a partition
whose leader is -1 answers LEADER_NOT_AVAILABLE; offline replicas are those on fenced or
unregistered brokers; the controller id a client sees is an alive broker (clients cannot reach a
KRaft controller).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker.authorized_operations import cluster_operations, topic_operations
from odradek.broker.cluster_member import ClusterMember
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import OFFSETS_TOPIC
from odradek.broker.kafka_channel import ChannelError
from odradek.broker.txn_runtime import TRANSACTION_STATE_TOPIC
from odradek.controller import NO_LEADER
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import (
    RequestHeader,
    make,
    nested,
    request_module,
    request_type,
    response_module,
    response_type,
)

logger = logging.getLogger(__name__)

ZERO_UUID = uuid.UUID(int=0)
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
#: How long an admin request waits for its change to reach this broker's image.
_PROPAGATION_TIMEOUT_S = 5.0


def _member(context: BrokerContext) -> ClusterMember:
    assert context.cluster is not None
    return context.cluster


async def metadata(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    """Metadata (3) answered from the image."""
    member = _member(context)
    version = header.api_version
    module = response_module(ApiKey.METADATA, version)
    topic_type = nested(module, "MetadataResponseTopic")
    partition_type = nested(module, "MetadataResponsePartition")
    operations = topic_operations(
        bool(getattr(request, "include_topic_authorized_operations", False))
    )
    image = member.image

    def describe(name: str | None, topic_id: uuid.UUID | None, error: ErrorCode) -> Any:
        topic = image.topic(name) if name is not None else None
        if topic is None and topic_id is not None:
            topic = image.topics_by_id.get(topic_id)
        partitions = []
        if topic is not None and error is ErrorCode.none:
            for index in sorted(topic.partitions):
                state = image.partition_metadata(topic.name, index, member.client_listener_name())
                assert state is not None
                partitions.append(
                    make(
                        partition_type,
                        error_code=ErrorCode.leader_not_available
                        if state.leader_id == NO_LEADER
                        else ErrorCode.none,
                        partition_index=index,
                        leader_id=state.leader_id,
                        leader_epoch=state.leader_epoch,
                        replica_nodes=state.replica_nodes,
                        isr_nodes=state.isr_nodes,
                        offline_replicas=state.offline_replicas,
                    )
                )
        return make(
            topic_type,
            error_code=error,
            name=topic.name if topic is not None else name,
            topic_id=topic.topic_id if topic is not None else (topic_id or ZERO_UUID),
            is_internal=(topic.name if topic is not None else name) in INTERNAL_TOPICS,
            partitions=tuple(partitions),
            topic_authorized_operations=operations,
        )

    every_topic = request.topics is None or (version == 0 and not request.topics)
    results = []
    if every_topic:
        results = [describe(name, None, ErrorCode.none) for name in sorted(image.topics_by_name)]
    else:
        to_create = []
        for requested in request.topics:
            name = requested.name
            topic_id = getattr(requested, "topic_id", None)
            if name is None:
                known = topic_id is not None and topic_id in image.topics_by_id
                error = ErrorCode.none if known else ErrorCode.unknown_topic_id
                results.append(describe(None, topic_id, error))
            elif image.topic(name) is not None:
                results.append(describe(name, None, ErrorCode.none))
            elif (
                getattr(request, "allow_auto_topic_creation", True)
                and context.config.auto_create_topics_enable
            ):
                to_create.append(name)
                results.append(describe(name, None, ErrorCode.leader_not_available))
            else:
                results.append(describe(name, None, ErrorCode.unknown_topic_or_partition))
        if to_create:
            await _auto_create(member, to_create)

    alive = image.alive_brokers()
    brokers = []
    for registration in alive:
        endpoint = next(
            (e for e in registration.listeners if e.name == member.client_listener_name()), None
        )
        if endpoint is not None:
            brokers.append(
                make(
                    nested(module, "MetadataResponseBroker"),
                    node_id=registration.broker_id,
                    host=endpoint.host,
                    port=endpoint.port,
                    rack=registration.rack,
                )
            )
    return make(
        response_type(ApiKey.METADATA, version),
        throttle_time=0,
        brokers=tuple(brokers),
        cluster_id=context.cluster_id,
        controller_id=member.controller_id_for_clients(),
        topics=tuple(results),
        cluster_authorized_operations=cluster_operations(
            bool(getattr(request, "include_cluster_authorized_operations", False))
        ),
        error_code=ErrorCode.none,
    )


async def _auto_create(member: ClusterMember, names: list[str]) -> None:
    """auto.create.topics.enable: CreateTopics with the defaults, sent to the controller."""
    version = 7
    module = request_module(ApiKey.CREATE_TOPICS, version)
    topic_type = nested(module, "CreatableTopic")
    request = make(
        request_type(ApiKey.CREATE_TOPICS, version),
        topics=tuple(
            make(
                topic_type,
                name=name,
                num_partitions=-1,
                replication_factor=-1,
                assignments=(),
                configs=(),
            )
            for name in names
        ),
        timeout=30_000,
        validate_only=False,
    )
    try:
        await member.forward(ApiKey.CREATE_TOPICS, version, request)
    except ChannelError:
        return
    await member.wait_for_topics(names, present=True, timeout_s=_PROPAGATION_TIMEOUT_S)


async def find_coordinator(
    context: BrokerContext, key: str, transactional: bool
) -> tuple[ErrorCode, int, str, int]:
    """FindCoordinator for one key: (error, node id, host, port) of the leader of the key's
    partition of `__consumer_offsets` (a group) or `__transaction_state` (a transactional
    id). The topic is created through the controller on first use with
    `offsets.topic.replication.factor` / `transaction.state.log.replication.factor` copies
    (Kafka's AutoTopicCreationManager for internal topics); COORDINATOR_NOT_AVAILABLE while
    it cannot be, and while the partition has no leader."""
    member = _member(context)
    name = TRANSACTION_STATE_TOPIC if transactional else OFFSETS_TOPIC
    if member.image.topic(name) is None:
        await _create_internal_topic(context, member, name)
    # A transactional id's partition among the topic's partitions (the image's count).
    index = (
        context.transactions.partition_for(key)
        if transactional
        else context.groups.coordinator.partition_for(key)
    )
    # The coordinator's endpoint on the listener the request came in on, as Metadata answers.
    listener = member.client_listener_name()
    state = member.image.partition_metadata(name, index, listener)
    if state is None or state.leader_id == NO_LEADER:
        return ErrorCode.coordinator_not_available, -1, "", -1
    registration = member.image.brokers.get(state.leader_id)
    endpoint = None
    if registration is not None and not registration.fenced:
        endpoint = next((e for e in registration.listeners if e.name == listener), None)
    if endpoint is None:
        return ErrorCode.coordinator_not_available, -1, "", -1
    return ErrorCode.none, state.leader_id, endpoint.host, endpoint.port


async def _create_internal_topic(context: BrokerContext, member: ClusterMember, name: str) -> None:
    """CreateTopics for an internal topic, sent to the controller; waits (a few seconds at
    most) until this broker's image has it. Concurrent callers share one request."""
    pending = member.internal_topic_creations.get(name)
    if pending is None:
        pending = asyncio.get_running_loop().create_task(_send_create(context, member, name))
        member.internal_topic_creations[name] = pending
        pending.add_done_callback(lambda _task: member.internal_topic_creations.pop(name, None))
    with contextlib.suppress(Exception):
        await asyncio.shield(pending)


async def _send_create(context: BrokerContext, member: ClusterMember, name: str) -> None:
    properties = context.config.properties
    configs = {"cleanup.policy": "compact"}
    if name == OFFSETS_TOPIC:
        partitions = context.config.group_config().offsets_topic_partitions
        replication_factor = int(properties["offsets.topic.replication.factor"])
        configs["segment.bytes"] = properties["offsets.topic.segment.bytes"]
    else:
        partitions = context.transactions.configured_partitions()
        replication_factor = int(properties["transaction.state.log.replication.factor"])
        configs["segment.bytes"] = properties["transaction.state.log.segment.bytes"]
        configs["min.insync.replicas"] = properties["transaction.state.log.min.isr"]
    version = 7
    module = request_module(ApiKey.CREATE_TOPICS, version)
    request = make(
        request_type(ApiKey.CREATE_TOPICS, version),
        topics=(
            make(
                nested(module, "CreatableTopic"),
                name=name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                assignments=(),
                configs=tuple(
                    make(nested(module, "CreatableTopicConfig"), name=key, value=value)
                    for key, value in configs.items()
                ),
            ),
        ),
        timeout=30_000,
        validate_only=False,
    )
    try:
        response = await member.forward(ApiKey.CREATE_TOPICS, version, request)
    except ChannelError as error:
        logger.warning("cannot create %s: controller unreachable: %s", name, error)
        return
    error_code = response.topics[0].error_code
    if error_code not in (ErrorCode.none, ErrorCode.topic_already_exists):
        logger.warning("cannot create %s: %s", name, ErrorCode(error_code).name)
        return
    if error_code is ErrorCode.none:
        logger.info("created %s (%d partitions, %d replicas)", name, partitions, replication_factor)
    await member.wait_for_topics([name], present=True, timeout_s=_PROPAGATION_TIMEOUT_S)


async def describe_cluster(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    """DescribeCluster (60) from the image; v2's include_fenced_brokers adds fenced ones."""
    member = _member(context)
    version = header.api_version
    module = response_module(ApiKey.DESCRIBE_CLUSTER, version)
    include_fenced = bool(getattr(request, "include_fenced_brokers", False))
    brokers = []
    for broker_id, registration in sorted(member.image.brokers.items()):
        if registration.fenced and not include_fenced:
            continue
        endpoint = next(
            (e for e in registration.listeners if e.name == member.client_listener_name()), None
        )
        if endpoint is None:
            continue
        brokers.append(
            make(
                nested(module, "DescribeClusterBroker"),
                broker_id=broker_id,
                host=endpoint.host,
                port=endpoint.port,
                rack=registration.rack,
                is_fenced=registration.fenced,
            )
        )
    endpoint_type = getattr(request, "endpoint_type", 1)
    return make(
        response_type(ApiKey.DESCRIBE_CLUSTER, version),
        throttle_time=0,
        error_code=ErrorCode.none if endpoint_type == 1 else ErrorCode.unsupported_endpoint_type,
        error_message=None
        if endpoint_type == 1
        else "Only the brokers endpoint type is supported.",
        endpoint_type=endpoint_type,
        cluster_id=context.cluster_id,
        controller_id=member.controller_id_for_clients(),
        brokers=tuple(brokers) if endpoint_type == 1 else (),
        cluster_authorized_operations=cluster_operations(
            request.include_cluster_authorized_operations
        ),
    )


async def forward(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    """CreateTopics / DeleteTopics / CreatePartitions: the controller decides; the answer
    returns once this broker's image shows the change (or after a few seconds), so a client's
    next Metadata sees it. An unreachable controller is REQUEST_TIMED_OUT per topic."""
    member = _member(context)
    api_key, version = header.api_key, header.api_version
    try:
        response = await member.forward(api_key, version, request)
    except ChannelError:
        return _timed_out(api_key, version, request)
    if api_key == ApiKey.CREATE_TOPICS and not request.validate_only:
        created = [t.name for t in response.topics if t.error_code is ErrorCode.none]
        await member.wait_for_topics(created, present=True, timeout_s=_PROPAGATION_TIMEOUT_S)
    elif api_key == ApiKey.DELETE_TOPICS:
        deleted = [t.name for t in response.responses if t.error_code is ErrorCode.none]
        await member.wait_for_topics(deleted, present=False, timeout_s=_PROPAGATION_TIMEOUT_S)
    return response


def _timed_out(api_key: int, version: int, request: Any) -> Any:
    module = response_module(api_key, version)
    error = ErrorCode.request_timed_out
    message = "The controller could not be reached."
    if api_key == ApiKey.CREATE_TOPICS:
        result_type = nested(module, "CreatableTopicResult")
        return make(
            response_type(api_key, version),
            throttle_time=0,
            topics=tuple(
                make(
                    result_type,
                    name=t.name,
                    topic_id=ZERO_UUID,
                    error_code=error,
                    error_message=message,
                    num_partitions=-1,
                    replication_factor=-1,
                    configs=None,
                )
                for t in request.topics
            ),
        )
    if api_key == ApiKey.DELETE_TOPICS:
        result_type = nested(module, "DeletableTopicResult")
        requested = (
            [(t.name, t.topic_id) for t in request.topics]
            if version >= 6
            else [(name, ZERO_UUID) for name in request.topic_names]
        )
        return make(
            response_type(api_key, version),
            throttle_time=0,
            responses=tuple(
                make(
                    result_type,
                    name=name,
                    topic_id=topic_id,
                    error_code=error,
                    error_message=message,
                )
                for name, topic_id in requested
            ),
        )
    result_type = nested(module, "CreatePartitionsTopicResult")
    return make(
        response_type(api_key, version),
        throttle_time=0,
        results=tuple(
            make(result_type, name=t.name, error_code=error, error_message=message)
            for t in request.topics
        ),
    )
