"""What Kafka 4 admin clients expect: group and dynamic broker configs (persisted across a
restart and applied), authorized operations, the ACL APIs without an authorizer,
DescribeTopicPartitions' pagination, and the raised ApiVersions / DescribeCluster versions."""

from __future__ import annotations

import datetime
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kafka.admin import ACLFilter as KafkaPythonAclFilter
from kafka.admin import ACLOperation as KafkaPythonAclOperation
from kafka.admin import ACLPermissionType as KafkaPythonAclPermissionType
from kafka.admin import ACLResourcePatternType as KafkaPythonPatternType
from kafka.admin import ConfigResource as KafkaPythonConfigResource
from kafka.admin import ConfigResourceType, KafkaAdminClient
from kafka.admin import ResourcePatternFilter as KafkaPythonResourcePatternFilter
from kafka.admin import ResourceType as KafkaPythonResourceType
from kafka.errors import SecurityDisabledError
from kio.schema.errors import ErrorCode
from raw_client import RawClient, request_of

from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, nested, request_module
from odradek.testing.pytest_plugin import TEST_CONFIG

GROUP_CONFIG_SOURCE = 8
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
MIN_INT32 = -(2**31)
TOPIC_OPERATIONS = 3576  # READ WRITE CREATE DELETE ALTER DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS
CLUSTER_OPERATIONS = 8096  # CREATE ALTER DESCRIBE CLUSTER_ACTION (ALTER|DESCRIBE)_CONFIGS IDEMP.
GROUP_OPERATIONS = 3400  # READ DELETE DESCRIBE DESCRIBE_CONFIGS ALTER_CONFIGS


def admin_for(broker: Broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap_servers})


def incremental(admin: AdminClient, resource_type: Any, name: str, **sets: str) -> None:
    resource = ConfigResource(
        resource_type,
        name,
        incremental_configs=[
            ConfigEntry(key.replace("_", "."), value, incremental_operation=AlterConfigOpType.SET)
            for key, value in sets.items()
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=10)


def described(admin: AdminClient, resource_type: Any, name: str) -> dict[str, Any]:
    resource = ConfigResource(resource_type, name)
    result: dict[str, Any] = admin.describe_configs([resource])[resource].result(timeout=10)
    return result


def error_code_of(call: Any) -> int:
    with pytest.raises(KafkaException) as caught:
        call()
    code: int = caught.value.args[0].code()
    return code


# -- group configs ---------------------------------------------------------------------------


def test_group_configs_are_checked_persisted_and_described(tmp_path: Path) -> None:
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        admin = admin_for(broker)
        incremental(admin, ResourceType.GROUP, "orders", consumer_session_timeout_ms="20000")
        # Below the broker's group.consumer.min.heartbeat.interval.ms (100 here).
        assert error_code_of(
            lambda: incremental(
                admin, ResourceType.GROUP, "orders", consumer_heartbeat_interval_ms="50"
            )
        ) == int(ErrorCode.invalid_config)
        # Above group.consumer.max.session.timeout.ms (Kafka's 60000).
        assert error_code_of(
            lambda: incremental(
                admin, ResourceType.GROUP, "orders", consumer_session_timeout_ms="70000"
            )
        ) == int(ErrorCode.invalid_config)
        assert error_code_of(
            lambda: incremental(admin, ResourceType.GROUP, "orders", no_such_config="1")
        ) == int(ErrorCode.invalid_config)
        assert error_code_of(
            lambda: incremental(admin, ResourceType.GROUP, "orders", share_isolation_level="dirty")
        ) == int(ErrorCode.invalid_config)
        incremental(admin, ResourceType.GROUP, "orders", share_auto_offset_reset="by_duration:PT1H")
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        configs = described(admin_for(broker), ResourceType.GROUP, "orders")
        session = configs["consumer.session.timeout.ms"]
        assert (session.value, session.source) == ("20000", GROUP_CONFIG_SOURCE)
        assert configs["share.auto.offset.reset"].value == "by_duration:PT1H"
        heartbeat = configs["consumer.heartbeat.interval.ms"]
        assert heartbeat.value == TEST_CONFIG["group.consumer.heartbeat.interval.ms"]
        assert heartbeat.source != GROUP_CONFIG_SOURCE
        assert set(configs) >= {
            "consumer.session.timeout.ms",
            "consumer.heartbeat.interval.ms",
            "share.session.timeout.ms",
            "share.heartbeat.interval.ms",
            "share.record.lock.duration.ms",
            "share.auto.offset.reset",
            "share.isolation.level",
        }


def consumer_heartbeat(client: RawClient, group: str, member_id: str, epoch: int) -> Any:
    return client.request(
        request_of(ApiKey.CONSUMER_GROUP_HEARTBEAT, 1)(
            group_id=group,
            member_id=member_id,
            member_epoch=epoch,
            instance_id=None,
            rack_id=None,
            rebalance_timeout=datetime.timedelta(seconds=60),
            subscribed_topic_names=("nothing-here",),
            subscribed_topic_regex=None,
            server_assignor=None,
            topic_partitions=(),
        )
    )


def group_members(client: RawClient, group: str) -> int:
    response = client.request(
        request_of(ApiKey.CONSUMER_GROUP_DESCRIBE, 1)(
            group_ids=(group,), include_authorized_operations=True
        )
    )
    (described_group,) = response.groups
    assert described_group.authorized_operations == GROUP_OPERATIONS
    return len(described_group.members)


def test_group_configs_override_the_coordinator_defaults(odradek_broker: Broker) -> None:
    admin = admin_for(odradek_broker)
    # The broker default session timeout is 6 s here; the group's own is 1.5 s.
    incremental(
        admin,
        ResourceType.GROUP,
        "short-lived",
        consumer_session_timeout_ms="1500",
        consumer_heartbeat_interval_ms="700",
    )
    with RawClient(odradek_broker.bootstrap_servers) as client:
        response = consumer_heartbeat(client, "short-lived", str(uuid.uuid4()), 0)
        assert response.error_code == ErrorCode.none
        assert response.heartbeat_interval.total_seconds() * 1000 == 700
        assert group_members(client, "short-lived") == 1
        # No more heartbeats: the member is removed once the group's session timeout passes
        # (with the broker default it would still be there 6 s later).
        deadline = time.monotonic() + 5
        while group_members(client, "short-lived") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert group_members(client, "short-lived") == 0


# -- dynamic broker configs ------------------------------------------------------------------


def test_dynamic_broker_configs_apply_persist_and_report_their_source(tmp_path: Path) -> None:
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        admin = admin_for(broker)
        admin.create_topics([NewTopic("sized", 1, 1)])["sized"].result(10)
        # This broker: the default retention of every topic without an override.
        incremental(admin, ResourceType.BROKER, "1", log_retention_ms="1000")
        # The cluster-wide default: raw requests (confluent-kafka and kafka-python refuse an
        # empty broker name).
        with RawClient(broker.bootstrap_servers) as client:
            module = request_module(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1)
            response = client.request(
                request_of(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1)(
                    resources=(
                        nested(module, "AlterConfigsResource")(
                            resource_type=4,
                            resource_name="",
                            configs=(
                                nested(module, "AlterableConfig")(
                                    name="message.max.bytes", config_operation=0, value="2000"
                                ),
                            ),
                        ),
                    ),
                    validate_only=False,
                )
            )
            assert [result.error_code for result in response.responses] == [ErrorCode.none]
            module = request_module(ApiKey.DESCRIBE_CONFIGS, 4)
            response = client.request(
                request_of(ApiKey.DESCRIBE_CONFIGS, 4)(
                    resources=(
                        nested(module, "DescribeConfigsResource")(
                            resource_type=4, resource_name="", configuration_keys=None
                        ),
                    ),
                    include_synonyms=True,
                    include_documentation=False,
                )
            )
            (result,) = response.results
            assert [(c.name, c.value, c.config_source) for c in result.configs] == [
                ("message.max.bytes", "2000", DYNAMIC_DEFAULT_BROKER_CONFIG)
            ]
        # kafka-python's (legacy, whole-set) AlterConfigs on this broker.
        kafka_admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            kafka_admin.alter_configs(
                [
                    KafkaPythonConfigResource(
                        ConfigResourceType.BROKER,
                        "1",
                        configs={"log.retention.ms": "3600000", "num.io.threads": "4"},
                    )
                ]
            )
        finally:
            kafka_admin.close()
        # A property that is not dynamic: Kafka's INVALID_REQUEST.
        assert error_code_of(
            lambda: incremental(admin, ResourceType.BROKER, "1", auto_create_topics_enable="false")
        ) == int(ErrorCode.invalid_request)
        assert error_code_of(
            lambda: incremental(admin, ResourceType.BROKER, "1", log_retention_ms="soon")
        ) == int(ErrorCode.invalid_request)
        assert_dynamic_configs_in_effect(broker)
    with Broker(data_dir=tmp_path, config=TEST_CONFIG) as broker:
        assert_dynamic_configs_in_effect(broker)


def assert_dynamic_configs_in_effect(broker: Broker) -> None:
    admin = admin_for(broker)
    configs = described(admin, ResourceType.BROKER, "1")
    retention = configs["log.retention.ms"]
    assert (retention.value, retention.source) == ("3600000", DYNAMIC_BROKER_CONFIG)
    assert not retention.is_read_only
    max_bytes = configs["message.max.bytes"]
    assert (max_bytes.value, max_bytes.source) == ("2000", DYNAMIC_DEFAULT_BROKER_CONFIG)
    assert configs["log.dirs"].is_read_only
    topic = described(admin, ResourceType.TOPIC, "sized")
    assert topic["retention.ms"].value == "3600000"
    assert topic["retention.ms"].source == DYNAMIC_BROKER_CONFIG
    # message.max.bytes is applied: a 5 kB record no longer fits.
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "message.max.bytes": 100_000}
    )
    errors: list[KafkaError] = []
    producer.produce("sized", value=b"x" * 5000, on_delivery=lambda error, _m: errors.append(error))
    producer.flush(10)
    assert [error.code() for error in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]


# -- authorized operations and ACLs ----------------------------------------------------------


def test_authorized_operations_are_every_supported_operation(odradek_broker: Broker) -> None:
    admin = admin_for(odradek_broker)
    admin.create_topics([NewTopic("described", 2, 1)])["described"].result(10)
    from confluent_kafka import TopicCollection

    topic = admin.describe_topics(
        TopicCollection(["described"]), include_authorized_operations=True
    )["described"].result(10)
    assert len(topic.authorized_operations) == 8
    cluster = admin.describe_cluster(include_authorized_operations=True).result(10)
    assert len(cluster.authorized_operations) == 7
    assert AclOperation.IDEMPOTENT_WRITE in cluster.authorized_operations
    with RawClient(odradek_broker.bootstrap_servers) as client:
        for version, asked in ((8, True), (10, False), (13, True)):
            module = request_module(ApiKey.METADATA, version)
            topic = make(
                nested(module, "MetadataRequestTopic"), name="described", topic_id=uuid.UUID(int=0)
            )
            response = client.request(
                make(
                    request_of(ApiKey.METADATA, version),
                    topics=(topic,),
                    allow_auto_topic_creation=False,
                    include_cluster_authorized_operations=asked,
                    include_topic_authorized_operations=asked,
                ),
                version,
            )
            expected = TOPIC_OPERATIONS if asked else MIN_INT32
            assert response.topics[0].topic_authorized_operations == expected
            if version < 11:
                assert response.cluster_authorized_operations == (
                    CLUSTER_OPERATIONS if asked else MIN_INT32
                )
        for version in (3, 6):
            response = client.request(
                request_of(ApiKey.DESCRIBE_GROUPS, version)(
                    groups=("anyone",), include_authorized_operations=True
                )
            )
            assert response.groups[0].authorized_operations == GROUP_OPERATIONS


def test_acl_apis_answer_security_disabled(odradek_broker: Broker) -> None:
    admin = admin_for(odradek_broker)
    acl_filter = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    # librdkafka drops DescribeAcls' error code (an empty listing); kafka-python raises it.
    assert admin.describe_acls(acl_filter).result(10) == []
    kafka_admin = KafkaAdminClient(bootstrap_servers=odradek_broker.bootstrap_servers)
    try:
        with pytest.raises(SecurityDisabledError):
            kafka_admin.describe_acls(
                KafkaPythonAclFilter(
                    principal=None,
                    host=None,
                    operation=KafkaPythonAclOperation.ANY,
                    permission_type=KafkaPythonAclPermissionType.ANY,
                    resource_pattern=KafkaPythonResourcePatternFilter(
                        KafkaPythonResourceType.ANY, None, KafkaPythonPatternType.ANY
                    ),
                )
            )
    finally:
        kafka_admin.close()
    binding = AclBinding(
        ResourceType.TOPIC,
        "t",
        ResourcePatternType.LITERAL,
        "User:alice",
        "*",
        AclOperation.READ,
        AclPermissionType.ALLOW,
    )
    futures = admin.create_acls([binding])
    assert error_code_of(lambda: futures[binding].result(10)) == KafkaError.SECURITY_DISABLED
    with RawClient(odradek_broker.bootstrap_servers) as client:
        for version in (1, 2, 3):
            describe = client.request(
                request_of(ApiKey.DESCRIBE_ACLS, version)(
                    resource_type_filter=1,
                    resource_name_filter=None,
                    pattern_type_filter=1,
                    principal_filter=None,
                    host_filter=None,
                    operation=1,
                    permission_type=1,
                )
            )
            assert describe.error_code == ErrorCode.security_disabled
            module = request_module(ApiKey.DELETE_ACLS, version)
            deleted = client.request(
                request_of(ApiKey.DELETE_ACLS, version)(
                    filters=(
                        nested(module, "DeleteAclsFilter")(
                            resource_type_filter=1,
                            resource_name_filter=None,
                            pattern_type_filter=1,
                            principal_filter=None,
                            host_filter=None,
                            operation=1,
                            permission_type=1,
                        ),
                    )
                )
            )
            assert [result.error_code for result in deleted.filter_results] == [
                ErrorCode.security_disabled
            ]
            module = request_module(ApiKey.CREATE_ACLS, version)
            created = client.request(
                request_of(ApiKey.CREATE_ACLS, version)(
                    creations=(
                        nested(module, "AclCreation")(
                            resource_type=2,
                            resource_name="t",
                            resource_pattern_type=3,
                            principal="User:alice",
                            host="*",
                            operation=3,
                            permission_type=3,
                        ),
                    )
                )
            )
            assert [result.error_code for result in created.results] == [
                ErrorCode.security_disabled
            ]


# -- DescribeTopicPartitions, DescribeCluster v2, ApiVersions v4 ------------------------------


def describe_topic_partitions(
    client: RawClient, topics: tuple[str, ...], limit: int, cursor: tuple[str, int] | None
) -> Any:
    module = request_module(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0)
    return client.request(
        request_of(ApiKey.DESCRIBE_TOPIC_PARTITIONS, 0)(
            topics=tuple(nested(module, "TopicRequest")(name=name) for name in topics),
            response_partition_limit=limit,
            cursor=nested(module, "Cursor")(topic_name=cursor[0], partition_index=cursor[1])
            if cursor
            else None,
        )
    )


def test_describe_topic_partitions_pages_with_a_cursor(odradek_broker: Broker) -> None:
    admin = admin_for(odradek_broker)
    for name, partitions in (("alpha", 5), ("beta", 2)):
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)
    with RawClient(odradek_broker.bootstrap_servers) as client:
        pages: list[list[tuple[str, int]]] = []
        cursor = None
        while True:
            response = describe_topic_partitions(client, ("beta", "alpha"), 3, cursor)
            pages.append(
                [
                    (topic.name, partition.partition_index)
                    for topic in response.topics
                    for partition in topic.partitions
                ]
            )
            assert all(
                topic.topic_authorized_operations == TOPIC_OPERATIONS for topic in response.topics
            )
            if response.next_cursor is None:
                break
            cursor = (response.next_cursor.topic_name, response.next_cursor.partition_index)
        assert pages == [
            [("alpha", 0), ("alpha", 1), ("alpha", 2)],
            [("alpha", 3), ("alpha", 4), ("beta", 0)],
            [("beta", 1)],
        ]
        # A page ending exactly at a topic's end points at the next topic's first partition.
        response = describe_topic_partitions(client, ("alpha", "beta"), 5, None)
        assert (response.next_cursor.topic_name, response.next_cursor.partition_index) == (
            "beta",
            0,
        )
        # Every topic when none is named; an unknown name is reported, not dropped.
        response = describe_topic_partitions(client, (), 100, None)
        assert {"alpha", "beta"} <= {topic.name for topic in response.topics}
        response = describe_topic_partitions(client, ("missing", "alpha"), 100, None)
        errors = {topic.name: topic.error_code for topic in response.topics}
        assert errors == {"missing": ErrorCode.unknown_topic_or_partition, "alpha": ErrorCode.none}
        # The cursor's topic must be one of the named topics.
        response = describe_topic_partitions(client, ("alpha",), 100, ("beta", 0))
        assert [topic.error_code for topic in response.topics] == [ErrorCode.invalid_request]


def test_describe_cluster_and_api_versions_at_every_version(odradek_broker: Broker) -> None:
    with RawClient(odradek_broker.bootstrap_servers) as client:
        for version in (0, 1, 2):
            fields: dict[str, Any] = {"include_cluster_authorized_operations": True}
            if version >= 1:
                fields["endpoint_type"] = 1
            if version >= 2:
                fields["include_fenced_brokers"] = True
            response = client.request(request_of(ApiKey.DESCRIBE_CLUSTER, version)(**fields))
            assert response.error_code == ErrorCode.none
            assert response.cluster_authorized_operations == CLUSTER_OPERATIONS
            (broker,) = response.brokers
            assert broker.broker_id == 1
            if version >= 2:
                assert broker.is_fenced is False
        response = client.request(
            request_of(ApiKey.API_VERSIONS, 4)(
                client_software_name="raw", client_software_version="1"
            )
        )
        assert response.error_code == ErrorCode.none
        advertised = {entry.api_key: entry.max_version for entry in response.api_keys}
        assert advertised[ApiKey.API_VERSIONS] == 4
        assert advertised[ApiKey.DESCRIBE_TOPIC_PARTITIONS] == 0
        assert advertised[ApiKey.DESCRIBE_ACLS] == 3


def test_list_offsets_earliest_local_and_latest_tiered(odradek_broker: Broker) -> None:
    admin = admin_for(odradek_broker)
    admin.create_topics([NewTopic("offsets", 1, 1)])["offsets"].result(10)
    producer = Producer({"bootstrap.servers": odradek_broker.bootstrap_servers})
    for index in range(3):
        producer.produce("offsets", value=b"%d" % index)
    assert producer.flush(10) == 0
    with RawClient(odradek_broker.bootstrap_servers) as client:
        for version in (7, 8, 9, 10):
            module = request_module(ApiKey.LIST_OFFSETS, version)
            response = client.request(
                make(
                    request_of(ApiKey.LIST_OFFSETS, version),
                    replica_id=-1,
                    isolation_level=0,
                    timeout=datetime.timedelta(seconds=5),
                    topics=(
                        nested(module, "ListOffsetsTopic")(
                            name="offsets",
                            partitions=tuple(
                                nested(module, "ListOffsetsPartition")(
                                    partition_index=0, current_leader_epoch=-1, timestamp=timestamp
                                )
                                for timestamp in (-1, -4, -5)
                            ),
                        ),
                    ),
                )
            )
            answers = [
                (partition.error_code, partition.offset, partition.leader_epoch)
                for partition in response.topics[0].partitions
            ]
            latest = (ErrorCode.none, 3, 0)
            earliest_local = (
                (ErrorCode.none, 0, 0) if version >= 8 else (ErrorCode.unsupported_version, -1, -1)
            )
            latest_tiered = (
                (ErrorCode.none, -1, -1)
                if version >= 9
                else (ErrorCode.unsupported_version, -1, -1)
            )
            assert answers == [latest, earliest_local, latest_tiered]
