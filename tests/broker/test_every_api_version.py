"""A sweep of the whole advertised protocol: every API key at every version the broker
advertises in ApiVersions gets a minimal valid request, built from kio's request schema of that
exact version, and its answer must be Kafka's shape to the byte.

For each (api, version):
- the request carries an existing topic and a nonexistent one wherever the API takes topics,
  empty arrays and nulls where the schema allows them, and otherwise generic values (kio's field
  defaults, which are Kafka's JSON-schema defaults) with a small per-API table on top;
- the answer comes back on the same connection with the request's correlation id, its header
  is v1 (with tagged fields) exactly for flexible versions other than ApiVersions, and its body
  decodes with kio's response schema of the same version consuming the frame exactly: a field
  written in a version that lacks it, or a missing tagged-field section, leaves bytes over or runs
  short;
- no error code anywhere is UNKNOWN_SERVER_ERROR or outside Kafka's table, the nonexistent
  topic gets the error Kafka gives it (UNKNOWN_TOPIC_OR_PARTITION, or UNKNOWN_TOPIC_ID where the
  version names topics by id), and the existing topic gets Kafka's answer where that is
  deterministic;
- the broker logs no error and no traceback.

Beyond the advertised ranges (Kafka's SocketServer / KafkaApis): a version above the maximum or
below the minimum, and an API key the broker does not serve, close the connection; ApiVersions
is the exception and answers UNSUPPORTED_VERSION in its v0 body (KIP-511).
"""

from __future__ import annotations

import dataclasses
import datetime
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kio.index import api_key_map
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    is_optional,
)
from raw_client import RawClient, commit, encode_body, encode_request, request_of
from test_protocol_edges import batch, create_topic, produce_request

from odradek.broker import dispatcher
from odradek.broker.server import Broker
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import is_flexible, request_type, response_type, skip_tagged_fields
from odradek.testing.pytest_plugin import TEST_CONFIG

pytestmark = pytest.mark.timeout(60)

dispatcher.load_handlers()
#: The served ranges, each pair swept; `test_api_versions_advertises_exactly_the_handler_table`
#: checks the live ApiVersions answer lists exactly these (`LISTED`), except that Produce is
#: listed from v0 as Kafka 4 lists it (KAFKA-18659) while v0-v2 are refused.
ADVERTISED = {key: (h.min_version, h.max_version) for key, h in sorted(dispatcher.HANDLERS.items())}
LISTED = {**ADVERTISED, ApiKey.PRODUCE: (0, ADVERTISED[ApiKey.PRODUCE][1])}
SWEEP = [
    pytest.param(key, version, id=f"{ApiKey(key).name}-v{version}")
    for key, (low, high) in ADVERTISED.items()
    for version in range(low, high + 1)
]

TOPIC = "sweep"
COMMITTED_GROUP = "sweep-committed"
TOPIC_RESOURCE = 2
CONFIG_SET = 0
ACL_ANY = 1
ACL_LITERAL = 3
ACL_TOPIC = 2
ACL_READ = 3
ACL_ALLOW = 3
ZERO_UUID = uuid.UUID(int=0)
#: Fields whose name holds the topic of a topic element of a request or a response.
TOPIC_NAME_FIELDS = ("name", "topic", "topic_name", "resource_name")


@dataclasses.dataclass(frozen=True)
class Target:
    """A topic a request names: by name, and by id for the versions that use ids."""

    name: str
    topic_id: uuid.UUID


@dataclasses.dataclass
class Sweep:
    """What one (api, version) request is built from, and what its answer is checked against."""

    api_key: int
    version: int
    existing: Target
    missing: Target
    overrides: dict[str, Any]
    topic_arrays: frozenset[str]
    #: Every array empty, or null where the version allows null.
    empty: bool = False

    @property
    def group(self) -> str:
        return f"sweep-group-{self.api_key}-{self.version}"

    @property
    def transactional_id(self) -> str:
        return f"sweep-txn-{self.api_key}-{self.version}"


@dataclasses.dataclass(frozen=True)
class SweepBroker:
    broker: Broker
    topic_id: uuid.UUID


# ---------------------------------------------------------------------------------------------
# Requests: generic values from the schema, a small table per API on top.


def _ms(milliseconds: int) -> datetime.timedelta:
    return datetime.timedelta(milliseconds=milliseconds)


def _by_name(field: dataclasses.Field[Any], sweep: Sweep) -> Any:
    """Plausible values for fields that mean the same in every API; dataclasses.MISSING when the
    name says nothing."""
    name = field.name
    kind = field.metadata.get("kafka_type", "")
    if name in ("partition_index", "partition", "index"):
        return 0
    if name in ("partition_indexes", "partitions") and kind:
        return (0,)
    if name == "group_id":
        return sweep.group
    if name == "transactional_id":
        return sweep.transactional_id
    if name in ("member_id", "instance_id") and not is_optional(field):
        return ""
    if name in ("generation_id", "generation_id_or_member_epoch"):
        return -1
    if name in ("producer_id", "producer_epoch", "coordinator_epoch", "leader_epoch"):
        return 0
    if name in ("committed_offset", "fetch_offset", "offset"):
        return 0
    if name == "timestamp":
        return -1  # latest
    if name in ("max_bytes", "partition_max_bytes"):
        return 1 << 20
    if name in ("session_timeout", "rebalance_timeout", "transaction_timeout"):
        return _ms(10_000)
    if name == "max_wait":
        return _ms(0)
    if name == "replica_id":
        return -1  # a consumer
    if name == "committed_metadata":
        return ""
    return dataclasses.MISSING


def _by_kind(field: dataclasses.Field[Any], sweep: Sweep) -> Any:
    shape = classify_field(field)
    if isinstance(shape, EntityTupleField):
        return (build(shape.type_, sweep, None, {}),)
    if isinstance(shape, EntityField):
        return None if is_optional(field) else build(shape.type_, sweep, None, {})
    if isinstance(shape, PrimitiveTupleField):
        return ()
    if is_optional(field):
        return None
    kind = field.metadata.get("kafka_type", "")
    if kind.startswith("int") or kind == "uvarint":
        return 0
    if kind.startswith("timedelta"):
        return _ms(5_000)
    return {
        "string": "sweep",
        "bool": False,
        "uuid": ZERO_UUID,
        "bytes": b"",
        "records": None,
        "float64": 0.0,
    }[kind]


def _schema_default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _resolve(value: Any, field: dataclasses.Field[Any], sweep: Sweep, topic: Target | None) -> Any:
    """An override as the field wants it: a callable is called, a dict is one element, a list
    of dicts several, an int on a duration field is milliseconds."""
    if callable(value):
        value = value(sweep)
    shape = classify_field(field)
    if isinstance(shape, EntityTupleField) and isinstance(value, list):
        return tuple(build(shape.type_, sweep, topic, item) for item in value)
    if isinstance(shape, EntityTupleField) and isinstance(value, dict):
        return (build(shape.type_, sweep, topic, value),)
    if isinstance(shape, EntityField) and isinstance(value, dict):
        return build(shape.type_, sweep, topic, value)
    if field.metadata.get("kafka_type", "").startswith("timedelta") and isinstance(value, int):
        return _ms(value)
    return value


def build(entity_type: Any, sweep: Sweep, topic: Target | None, local: dict[str, Any]) -> Any:
    """An entity of `entity_type` with every field filled in.

    Precedence: `local` (this element's own values), the API's overrides, an array of topic
    elements (the existing topic, then the missing one), the topic's name or id when this entity
    is a topic element, values by field name, kio's schema default, a value by kind.
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(entity_type):
        name = field.name
        shape = classify_field(field)
        if name in local:
            value = _resolve(local[name], field, sweep, None)
        elif sweep.empty and isinstance(shape, EntityTupleField | PrimitiveTupleField):
            value = None if is_optional(field) else ()
        elif name in sweep.overrides:
            value = _resolve(sweep.overrides[name], field, sweep, None)
        elif name in sweep.topic_arrays and isinstance(shape, EntityTupleField):
            value = tuple(
                build(shape.type_, sweep, target, {}) for target in (sweep.existing, sweep.missing)
            )
        elif topic is not None and name in TOPIC_NAME_FIELDS:
            value = topic.name
        elif topic is not None and name == "topic_id":
            value = topic.topic_id
        else:
            value = _by_name(field, sweep)
            if value is dataclasses.MISSING:
                value = _schema_default(field)
            if value is dataclasses.MISSING:
                value = _by_kind(field, sweep)
        values[name] = value
    return entity_type(**values)


def _existing_and_missing_names(sweep: Sweep) -> tuple[str, ...]:
    return (sweep.existing.name, sweep.missing.name)


#: Per API: field values (by field name, anywhere in the request) and the arrays of topic
#: elements, which get the existing topic and then the missing one.
REQUESTS: dict[int, dict[str, Any]] = {
    ApiKey.PRODUCE: {
        "transactional_id": None,
        "acks": 1,
        "records": lambda sweep: batch(1),
    },
    ApiKey.FETCH: {"min_bytes": 0, "forgotten_topics_data": (), "replica_state": {}},
    ApiKey.LIST_OFFSETS: {"isolation_level": 0},
    ApiKey.METADATA: {
        "allow_auto_topic_creation": False,
        "topic_id": ZERO_UUID,  # named by name: Kafka's clients send a zero id with a name
        "include_cluster_authorized_operations": True,
        "include_topic_authorized_operations": True,
    },
    ApiKey.OFFSET_COMMIT: {"group_id": COMMITTED_GROUP},
    ApiKey.OFFSET_FETCH: {"group_id": COMMITTED_GROUP, "member_id": None, "require_stable": True},
    ApiKey.FIND_COORDINATOR: {"key_type": 0, "coordinator_keys": lambda sweep: (sweep.group,)},
    ApiKey.JOIN_GROUP: {
        "protocol_type": "consumer",
        "protocols": {"name": "range", "metadata": b""},
        "group_instance_id": None,
        "reason": None,
    },
    ApiKey.LEAVE_GROUP: {"members": {"member_id": "sweep-member"}},
    ApiKey.SYNC_GROUP: {"assignments": (), "protocol_type": None, "protocol_name": None},
    ApiKey.DESCRIBE_GROUPS: {
        "groups": lambda sweep: (sweep.group, COMMITTED_GROUP),
        "include_authorized_operations": True,
    },
    ApiKey.API_VERSIONS: {"client_software_name": "sweep", "client_software_version": "1.0"},
    ApiKey.CREATE_TOPICS: {
        "num_partitions": 1,
        "replication_factor": 1,
        "assignments": (),
        "configs": (),
        "validate_only": False,
    },
    ApiKey.DELETE_TOPICS: {
        "topic_names": _existing_and_missing_names,
        "topic_id": ZERO_UUID,  # named by name
    },
    ApiKey.INIT_PRODUCER_ID: {"transactional_id": None, "producer_id": -1, "producer_epoch": -1},
    ApiKey.OFFSET_FOR_LEADER_EPOCH: {"current_leader_epoch": -1},
    ApiKey.ADD_PARTITIONS_TO_TXN: {"verify_only": False},
    ApiKey.DESCRIBE_ACLS: {
        "resource_type_filter": ACL_ANY,
        "pattern_type_filter": ACL_ANY,
        "operation": ACL_ANY,
        "permission_type": ACL_ANY,
    },
    ApiKey.CREATE_ACLS: {
        "creations": {
            "resource_type": ACL_TOPIC,
            "resource_name": TOPIC,
            "resource_pattern_type": ACL_LITERAL,
            "principal": "User:sweep",
            "host": "*",
            "operation": ACL_READ,
            "permission_type": ACL_ALLOW,
        }
    },
    ApiKey.DELETE_ACLS: {
        "filters": {
            "resource_type_filter": ACL_ANY,
            "pattern_type_filter": ACL_ANY,
            "principal_filter": "User:sweep",
            "operation": ACL_ANY,
            "permission_type": ACL_ANY,
        }
    },
    ApiKey.DESCRIBE_CONFIGS: {
        "resource_type": TOPIC_RESOURCE,
        "configuration_keys": None,  # every config
        "include_synonyms": True,
        "include_documentation": True,
    },
    ApiKey.ALTER_CONFIGS: {
        "resource_type": TOPIC_RESOURCE,
        "configs": {"name": "retention.ms", "value": "86400000"},
        "validate_only": True,
    },
    ApiKey.CREATE_PARTITIONS: {"count": 1, "assignments": None, "validate_only": True},
    ApiKey.DELETE_GROUPS: {"groups_names": lambda sweep: (sweep.group,)},
    ApiKey.INCREMENTAL_ALTER_CONFIGS: {
        "resource_type": TOPIC_RESOURCE,
        "configs": {"name": "retention.ms", "config_operation": CONFIG_SET, "value": "86400000"},
        "validate_only": True,
    },
    ApiKey.OFFSET_DELETE: {"group_id": COMMITTED_GROUP},
    ApiKey.DESCRIBE_CLUSTER: {"include_cluster_authorized_operations": True},
    ApiKey.DESCRIBE_TRANSACTIONS: {"transactional_ids": lambda sweep: (sweep.transactional_id,)},
    ApiKey.CONSUMER_GROUP_HEARTBEAT: {
        # A new member joining (KIP-848; from v1 the client makes up its member id).
        "member_id": lambda sweep: str(uuid.uuid4()),
        "member_epoch": 0,
        "subscribed_topic_names": (TOPIC,),
        "topic_partitions": (),
        "server_assignor": None,
        "subscribed_topic_regex": None,
    },
    ApiKey.CONSUMER_GROUP_DESCRIBE: {
        "group_ids": lambda sweep: (sweep.group,),
        "include_authorized_operations": True,
    },
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: {"cursor": None},
}

TOPIC_ARRAYS: dict[int, frozenset[str]] = {
    ApiKey.PRODUCE: frozenset({"topic_data"}),
    ApiKey.ADD_PARTITIONS_TO_TXN: frozenset({"v3_and_below_topics", "topics"}),
    ApiKey.DESCRIBE_CONFIGS: frozenset({"resources"}),
    ApiKey.ALTER_CONFIGS: frozenset({"resources"}),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: frozenset({"resources"}),
}
DEFAULT_TOPIC_ARRAYS = frozenset({"topics"})
#: APIs that take no topics, or take them in no array of topic elements.
NO_TOPICS = frozenset(
    {
        ApiKey.FIND_COORDINATOR,
        ApiKey.JOIN_GROUP,
        ApiKey.HEARTBEAT,
        ApiKey.LEAVE_GROUP,
        ApiKey.SYNC_GROUP,
        ApiKey.DESCRIBE_GROUPS,
        ApiKey.LIST_GROUPS,
        ApiKey.API_VERSIONS,
        ApiKey.INIT_PRODUCER_ID,
        ApiKey.ADD_OFFSETS_TO_TXN,
        ApiKey.END_TXN,
        ApiKey.DESCRIBE_ACLS,
        ApiKey.CREATE_ACLS,
        ApiKey.DELETE_ACLS,
        ApiKey.DELETE_GROUPS,
        ApiKey.DESCRIBE_CLUSTER,
        ApiKey.DESCRIBE_TRANSACTIONS,
        ApiKey.LIST_TRANSACTIONS,
        ApiKey.CONSUMER_GROUP_HEARTBEAT,
        ApiKey.CONSUMER_GROUP_DESCRIBE,
    }
)


def doomed_topic(version: int) -> str:
    """The topic DeleteTopics v`version` deletes (it must exist, and only that test uses it)."""
    return f"sweep-doomed-v{version}"


def make_sweep(api_key: int, version: int, topic_id: uuid.UUID, empty: bool = False) -> Sweep:
    existing = Target(TOPIC, topic_id)
    if api_key == ApiKey.DELETE_TOPICS:
        existing = Target(doomed_topic(version), ZERO_UUID)
    missing = Target(f"sweep-missing-{api_key}-v{version}", uuid.uuid4())
    return Sweep(
        api_key=api_key,
        version=version,
        existing=existing,
        missing=missing,
        overrides=REQUESTS.get(api_key, {}),
        topic_arrays=TOPIC_ARRAYS.get(api_key, DEFAULT_TOPIC_ARRAYS),
        empty=empty,
    )


# ---------------------------------------------------------------------------------------------
# Answers: what Kafka gives the nonexistent topic and, where it is deterministic, the existing one.


def missing_topic_errors(api_key: int, version: int) -> set[ErrorCode]:
    """The error codes Kafka gives the nonexistent topic of the request."""
    if api_key == ApiKey.FETCH and version >= 13:
        return {ErrorCode.unknown_topic_id}  # named by id from v13 (KIP-516)
    if api_key == ApiKey.CREATE_TOPICS:
        return {ErrorCode.none}  # a new topic: created
    if api_key == ApiKey.OFFSET_FETCH:
        return {ErrorCode.none}  # no offset (-1), no error: OffsetFetch checks no topic
    return {ErrorCode.unknown_topic_or_partition}


#: The error codes Kafka gives the existing topic, where that does not depend on timing.
EXISTING_TOPIC_ERRORS: dict[int, set[ErrorCode]] = {
    ApiKey.PRODUCE: {ErrorCode.none},
    ApiKey.FETCH: {ErrorCode.none},
    ApiKey.LIST_OFFSETS: {ErrorCode.none},
    ApiKey.METADATA: {ErrorCode.none},
    ApiKey.OFFSET_COMMIT: {ErrorCode.none},
    ApiKey.OFFSET_FETCH: {ErrorCode.none},
    ApiKey.CREATE_TOPICS: {ErrorCode.topic_already_exists},
    ApiKey.DELETE_TOPICS: {ErrorCode.none},
    ApiKey.DELETE_RECORDS: {ErrorCode.none},
    ApiKey.OFFSET_FOR_LEADER_EPOCH: {ErrorCode.none},
    # Kafka checks every topic first and fails the rest with OPERATION_NOT_ATTEMPTED.
    ApiKey.ADD_PARTITIONS_TO_TXN: {ErrorCode.operation_not_attempted},
    ApiKey.DESCRIBE_CONFIGS: {ErrorCode.none},
    ApiKey.ALTER_CONFIGS: {ErrorCode.none},
    ApiKey.CREATE_PARTITIONS: {ErrorCode.invalid_partitions},  # already 1 partition
    ApiKey.INCREMENTAL_ALTER_CONFIGS: {ErrorCode.none},
    ApiKey.OFFSET_DELETE: {ErrorCode.none},
    ApiKey.DESCRIBE_PRODUCERS: {ErrorCode.none},
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: {ErrorCode.none},
}


def _children(entity: Any) -> Iterator[Any]:
    for field in dataclasses.fields(entity):
        value = getattr(entity, field.name)
        if dataclasses.is_dataclass(value):
            yield value
        elif isinstance(value, tuple):
            yield from (item for item in value if dataclasses.is_dataclass(item))


def error_codes(entity: Any, path: str = "") -> Iterator[tuple[str, int]]:
    """(path, code) of every error code in a response."""
    for field in dataclasses.fields(entity):
        if field.name.endswith("error_code"):
            yield f"{path}{field.name}", int(getattr(entity, field.name))
    for index, child in enumerate(_children(entity)):
        yield from error_codes(child, f"{path}{type(child).__name__}[{index}].")


def item_errors(elements: list[Any]) -> list[ErrorCode]:
    """The `error_code` of each topic element and of what it holds (partitions), not the
    side-band codes (CreateTopics' `topic_config_error_code`)."""
    return [
        ErrorCode(code)
        for element in elements
        for path, code in error_codes(element)
        if not path.endswith("topic_config_error_code")
    ]


def topic_elements(entity: Any, target: Target) -> Iterator[Any]:
    """The entities of a response that stand for `target` (by name or by id)."""
    names = [getattr(entity, name, None) for name in TOPIC_NAME_FIELDS]
    if target.name in names or getattr(entity, "topic_id", None) == target.topic_id != ZERO_UUID:
        yield entity
        return
    for child in _children(entity):
        yield from topic_elements(child, target)


# ---------------------------------------------------------------------------------------------
# The broker and the wire.


@pytest.fixture(scope="module")
def sweep_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SweepBroker]:
    """One broker for the whole sweep (no auto-creation, so a missing topic stays missing), with
    the topic `sweep` holding one batch, a committed offset of `sweep-committed`, and a topic for
    each DeleteTopics version to delete."""
    config = {**TEST_CONFIG, "auto.create.topics.enable": "false"}
    with Broker(data_dir=tmp_path_factory.mktemp("sweep"), config=config) as broker:
        with RawClient(broker.bootstrap_servers) as client:
            create_topic(client, TOPIC)
            low, high = ADVERTISED[ApiKey.DELETE_TOPICS]
            for version in range(low, high + 1):
                create_topic(client, doomed_topic(version))
            produced = client.request(produce_request(9, TOPIC, batch(3), acks=-1))
            assert produced.responses[0].partition_responses[0].error_code == ErrorCode.none
            assert commit(client, COMMITTED_GROUP, TOPIC, 0, 1) == ErrorCode.none
            metadata = client.request(
                request_of(ApiKey.METADATA, 12)(
                    topics=None,
                    allow_auto_topic_creation=False,
                    include_topic_authorized_operations=False,
                )
            )
            topic_id = next(t.topic_id for t in metadata.topics if t.name == TOPIC)
        yield SweepBroker(broker, topic_id)


def exchange(
    client: RawClient, api_key: int, version: int, body: bytes, correlation_id: int
) -> bytes:
    """Send one request; the response frame's body, checked for its correlation id and header."""
    client.send_raw(encode_request(api_key, version, body, correlation_id))
    frame = client.read_frame()
    assert frame, f"{ApiKey(api_key).name} v{version}: the broker closed the connection"
    (got,) = struct.unpack_from(">i", frame, 0)
    assert got == correlation_id
    position = 4
    if is_flexible(api_key, version) and api_key != ApiKey.API_VERSIONS:
        position = skip_tagged_fields(frame, position)  # response header v1
    return bytes(frame[position:])


def decode_exactly(api_key: int, version: int, body: bytes) -> Any:
    """The response body decoded with kio's schema of `version`; it must consume every byte."""
    response, size = entity_reader(response_type(api_key, version))(body, 0)
    assert size == len(body), (
        f"{ApiKey(api_key).name} v{version}: the response schema reads {size} of {len(body)} bytes"
    )
    return response


# ---------------------------------------------------------------------------------------------
# The sweep.


def test_api_versions_advertises_exactly_the_handler_table(sweep_broker: SweepBroker) -> None:
    with RawClient(sweep_broker.broker.bootstrap_servers) as client:
        response = client.request(
            request_of(ApiKey.API_VERSIONS, 3)(
                client_software_name="sweep", client_software_version="1.0"
            )
        )
    advertised = {e.api_key: (e.min_version, e.max_version) for e in response.api_keys}
    assert advertised == LISTED


def answer(sweep_broker: SweepBroker, sweep: Sweep) -> Any:
    """Send `sweep`'s request; its answer, checked for shape and for error codes Kafka
    never gives (UNKNOWN_SERVER_ERROR, codes outside Kafka's table)."""
    api_key, version = sweep.api_key, sweep.version
    request = build(request_type(api_key, version), sweep, None, {})
    correlation_id = 0x5EE9 + api_key * 100 + version
    with RawClient(sweep_broker.broker.bootstrap_servers) as client:
        body = exchange(client, api_key, version, encode_body(request), correlation_id)
        response = decode_exactly(api_key, version, body)
        # The connection is still usable after the answer.
        assert client.request(request_of(ApiKey.API_VERSIONS, 0)()).error_code == ErrorCode.none
    codes = list(error_codes(response))
    known = {int(code) for code in ErrorCode}
    assert [(path, code) for path, code in codes if code not in known] == []
    assert [(path, code) for path, code in codes if code == ErrorCode.unknown_server_error] == []
    return response


def check_topic_errors(response: Any, sweep: Sweep) -> None:
    """Kafka's error for the nonexistent topic and, where deterministic, for the existing one."""
    missing = list(topic_elements(response, sweep.missing))
    assert missing, f"the answer does not mention the nonexistent topic: {response}"
    allowed = missing_topic_errors(sweep.api_key, sweep.version)
    got = item_errors(missing)
    assert got, f"no error code for the nonexistent topic: {missing}"
    assert set(got) <= allowed, f"nonexistent topic: {got}, Kafka gives {allowed}"
    if sweep.api_key in EXISTING_TOPIC_ERRORS:
        existing = list(topic_elements(response, sweep.existing))
        assert existing, f"the answer does not mention the existing topic: {response}"
        got = item_errors(existing)
        assert set(got) <= EXISTING_TOPIC_ERRORS[sweep.api_key], f"existing topic: {got}"


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize(("api_key", "version"), SWEEP)
def test_every_api_version(sweep_broker: SweepBroker, api_key: int, version: int) -> None:
    sweep = make_sweep(api_key, version, sweep_broker.topic_id)
    response = answer(sweep_broker, sweep)
    if api_key not in NO_TOPICS:
        check_topic_errors(response, sweep)


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize(("api_key", "version"), SWEEP)
def test_every_api_version_with_empty_arrays(
    sweep_broker: SweepBroker, api_key: int, version: int
) -> None:
    """The same requests with every array empty, or null where the version allows it (Metadata's
    null topics: all of them; OffsetFetch's: every committed offset of the group)."""
    answer(sweep_broker, make_sweep(api_key, version, sweep_broker.topic_id, empty=True))


# ---------------------------------------------------------------------------------------------
# Outside the advertised ranges.

UNSUPPORTED = [
    pytest.param(key, high + 1, id=f"{ApiKey(key).name}-v{high + 1}-above-max")
    for key, (_low, high) in ADVERTISED.items()
] + [
    pytest.param(key, low - 1, id=f"{ApiKey(key).name}-v{low - 1}-below-min")
    for key, (low, _high) in ADVERTISED.items()
    if low > 0
]
#: Keys Kafka knows that this broker does not serve (controller, KRaft, share-group, SASL ...
#: APIs), and keys no Kafka has.
UNSERVED_KEYS = [*sorted(set(api_key_map) - set(ADVERTISED)), 200, 9999, 32767]


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize(("api_key", "version"), UNSUPPORTED)
def test_version_outside_the_advertised_range(
    sweep_broker: SweepBroker, api_key: int, version: int
) -> None:
    flexible = True  # a client that knows a newer version sends header v2 with it
    with RawClient(sweep_broker.broker.bootstrap_servers) as client:
        client.send_raw(encode_request(api_key, version, b"\x00" * 8, 77, flexible=flexible))
        frame = client.read_frame()
        if api_key != ApiKey.API_VERSIONS:
            assert frame == b""
            return
        # KIP-511: the answer is ApiVersions v0 (header v0, body v0), UNSUPPORTED_VERSION, with
        # the ranges the broker does support.
        assert struct.unpack_from(">i", frame, 0) == (77,)
        response = decode_exactly(ApiKey.API_VERSIONS, 0, bytes(frame[4:]))
        assert response.error_code == ErrorCode.unsupported_version
        assert {e.api_key: (e.min_version, e.max_version) for e in response.api_keys} == LISTED


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize("api_key", UNSERVED_KEYS)
def test_api_key_the_broker_does_not_serve_closes_the_connection(
    sweep_broker: SweepBroker, api_key: int
) -> None:
    with RawClient(sweep_broker.broker.bootstrap_servers) as client:
        client.send_raw(encode_request(api_key, 0, b"\x00" * 8, 78, flexible=False))
        assert client.read_frame() == b""
    with RawClient(sweep_broker.broker.bootstrap_servers) as client:
        assert client.request(request_of(ApiKey.API_VERSIONS, 0)()).error_code == ErrorCode.none


# ---------------------------------------------------------------------------------------------
# Variants of the sweep Kafka answers differently.

PRODUCE_VERSIONS = [
    pytest.param(version, id=f"PRODUCE-v{version}")
    for version in range(ADVERTISED[ApiKey.PRODUCE][0], ADVERTISED[ApiKey.PRODUCE][1] + 1)
]


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_produce_acks_zero_gets_no_answer(sweep_broker: SweepBroker, version: int) -> None:
    """acks=0 is the one request Kafka does not answer: the next answer on the connection is
    the next request's, and the connection stays open."""
    sweep = make_sweep(ApiKey.PRODUCE, version, sweep_broker.topic_id)
    request = build(
        request_type(ApiKey.PRODUCE, version),
        sweep,
        None,
        {"acks": 0, "topic_data": {"name": TOPIC, "partition_data": {"records": batch(1)}}},
    )
    with RawClient(sweep_broker.broker.bootstrap_servers) as client:
        client.send_raw(encode_request(ApiKey.PRODUCE, version, encode_body(request), 41))
        body = exchange(client, ApiKey.API_VERSIONS, 0, encode_body(request_of(18, 0)()), 42)
        assert decode_exactly(ApiKey.API_VERSIONS, 0, body).error_code == ErrorCode.none


@pytest.mark.usefixtures("no_tracebacks")
def test_delete_topics_by_id(sweep_broker: SweepBroker) -> None:
    """DeleteTopics v6 names topics by id (KIP-516): the existing one is deleted and answered
    with its name, the unknown id gets UNKNOWN_TOPIC_ID."""
    version = ADVERTISED[ApiKey.DELETE_TOPICS][1]
    name = "sweep-doomed-by-id"
    with RawClient(sweep_broker.broker.bootstrap_servers) as client:
        create_topic(client, name)
        metadata = client.request(
            request_of(ApiKey.METADATA, 12)(
                topics=None,
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            )
        )
    topic_id = next(topic.topic_id for topic in metadata.topics if topic.name == name)
    sweep = make_sweep(ApiKey.DELETE_TOPICS, version, topic_id)
    sweep.overrides = {
        **sweep.overrides,
        "topics": [
            {"name": None, "topic_id": topic_id},
            {"name": None, "topic_id": sweep.missing.topic_id},
        ],
    }
    response = answer(sweep_broker, sweep)
    deleted, unknown = response.responses
    assert (deleted.name, deleted.topic_id, deleted.error_code) == (name, topic_id, ErrorCode.none)
    assert (unknown.topic_id, unknown.error_code) == (
        sweep.missing.topic_id,
        ErrorCode.unknown_topic_id,
    )


#: Kafka's default for an authorized-operations bitfield nobody filled in.
OPERATIONS_OMITTED = -(2**31)
ERROR_ENTRIES = [
    *(
        pytest.param(
            ApiKey.CONSUMER_GROUP_DESCRIBE, version, id=f"CONSUMER_GROUP_DESCRIBE-v{version}"
        )
        for version in range(
            ADVERTISED[ApiKey.CONSUMER_GROUP_DESCRIBE][0],
            ADVERTISED[ApiKey.CONSUMER_GROUP_DESCRIBE][1] + 1,
        )
    ),
    *(
        pytest.param(ApiKey.DESCRIBE_TRANSACTIONS, version, id=f"DESCRIBE_TRANSACTIONS-v{version}")
        for version in range(
            ADVERTISED[ApiKey.DESCRIBE_TRANSACTIONS][0],
            ADVERTISED[ApiKey.DESCRIBE_TRANSACTIONS][1] + 1,
        )
    ),
]


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize(("api_key", "version"), ERROR_ENTRIES)
def test_error_entries_keep_the_schema_defaults(
    sweep_broker: SweepBroker, api_key: int, version: int
) -> None:
    """An unknown group (ConsumerGroupDescribe) or transactional id (DescribeTransactions): Kafka
    sets the entry's id, error code and message only (GroupMetadataManager.consumerGroupDescribe,
    TransactionCoordinator.handleDescribeTransactions), so every other field is its schema's
    default: zeros, empty strings, and no authorized operations."""
    sweep = make_sweep(api_key, version, sweep_broker.topic_id)
    response = answer(sweep_broker, sweep)
    if api_key == ApiKey.CONSUMER_GROUP_DESCRIBE:
        (group,) = response.groups
        assert group.error_code == ErrorCode.group_id_not_found
        assert (
            group.group_state,
            group.group_epoch,
            group.assignment_epoch,
            group.assignor_name,
            group.members,
            group.authorized_operations,
        ) == ("", 0, 0, "", (), OPERATIONS_OMITTED)
    else:
        (state,) = response.transaction_states
        assert state.error_code == ErrorCode.transactional_id_not_found
        assert (
            state.transaction_state,
            state.transaction_timeout,
            state.transaction_start_time,
            state.producer_id,
            state.producer_epoch,
            state.topics,
        ) == ("", datetime.timedelta(0), datetime.datetime.fromtimestamp(0, datetime.UTC), 0, 0, ())
