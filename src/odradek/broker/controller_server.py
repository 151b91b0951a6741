"""The controller process (`process.roles=controller`): Kafka 4's single KRaft voter.

Owns the `QuorumController` (odradek.controller) and its metadata log on disk
(storage/metadata_log.py). Every write follows QuorumController's contract: the controller
returns `(records, response)`, the records are appended as one batch and fdatasynced, and only
then is the response sent. On start the log is replayed; an empty log gets the bootstrap
records. A timer runs `tick(now_ms)` (session expiry -> fencing).

It listens on its controller listener and answers, with kio's schemas: ApiVersions,
BrokerRegistration (62), BrokerHeartbeat (63), AlterPartition (56), AllocateProducerIds (67)
through `controller.kio_adapter`; CreateTopics, DeleteTopics, CreatePartitions and
IncrementalAlterConfigs (topic, broker, cluster-default broker and group configs become
ConfigRecords) forwarded by brokers (a direct call: Kafka wraps them in Envelope); and Fetch v12
of `__cluster_metadata` partition 0, which is how brokers learn metadata, as in Kafka: batches
whose record values are `controller.records.encode_record` bytes, long-polled up to
`max_wait_ms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker.clock import now_ms
from odradek.broker.config import BrokerConfig
from odradek.broker.shutdown import bounded, cancel_and_wait
from odradek.controller import (
    AlterableConfig,
    AlterConfigsResource,
    ControllerConfig,
    CreatableTopic,
    CreatePartitionsTopic,
    MetadataRecord,
    QuorumController,
    decode_record,
    encode_record,
    kio_adapter,
)
from odradek.determinism import new_random
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import (
    RequestHeader,
    encode_entity,
    frame_response,
    is_flexible,
    make,
    nested,
    read_request_body,
    read_request_header,
    response_module,
    response_type,
)
from odradek.protocol.tolerant_reader import RemoteProtocolError
from odradek.storage.errors import OffsetOutOfRange
from odradek.storage.lazy_files import OS_FILES, SegmentFiles
from odradek.storage.metadata_log import METADATA_PARTITION, METADATA_TOPIC, MetadataLog

logger = logging.getLogger(__name__)

_INT32 = struct.Struct(">i")
ControllerHandler = Callable[[RequestHeader, Any], Awaitable[Any]]

#: The versions this controller answers: api key -> (min, max).
CONTROLLER_APIS: dict[int, tuple[int, int]] = {
    ApiKey.API_VERSIONS: (0, 3),
    ApiKey.FETCH: (12, 12),
    ApiKey.CREATE_TOPICS: (2, 7),
    ApiKey.DELETE_TOPICS: (1, 6),
    ApiKey.CREATE_PARTITIONS: (0, 3),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: (0, 1),
    kio_adapter.ALTER_PARTITION: (2, 3),
    kio_adapter.BROKER_REGISTRATION: (0, 4),
    kio_adapter.BROKER_HEARTBEAT: (0, 1),
    kio_adapter.ALLOCATE_PRODUCER_IDS: (0, 0),
}


def _supported(api_key: int, api_version: int) -> bool:
    low, high = CONTROLLER_APIS.get(api_key, (1, 0))
    return low <= api_version <= high


def _results_response(
    api_key: ApiKey, version: int, field: str, entry: str, rows: Iterable[dict[str, Any]]
) -> Any:
    """Response `api_key` v`version` with throttle_time 0 and, in `field`, one nested `entry`
    per row (a row maps the entry's field names to values): the shape of the controller's
    answers to forwarded admin requests (CreateTopics, DeleteTopics, CreatePartitions,
    IncrementalAlterConfigs), as Kafka's ControllerApis builds them."""
    result_type = nested(response_module(api_key, version), entry)
    return make(
        response_type(api_key, version),
        throttle_time=0,
        **{field: tuple(make(result_type, **row) for row in rows)},
    )


class MetadataLogFailedError(RuntimeError):
    """The metadata log could not be written; the controller process must restart."""


class ControllerServer:
    """One controller voter: its state machine, its metadata log, its listener."""

    def __init__(
        self, config: BrokerConfig, cluster_id: str, files: SegmentFiles = OS_FILES
    ) -> None:
        kraft = config.kraft
        if kraft is None or not kraft.is_controller:
            raise ValueError("ControllerServer needs process.roles to include controller")
        listener = kraft.controller_listener()
        assert listener is not None  # checked by parse_kraft_settings
        self.config = config
        self.listener = listener
        self.cluster_id = cluster_id
        self.node_id = config.node_id
        # The metadata log's file layer (the simulator passes its simulated disk).
        self.files = files
        self.controller_config = ControllerConfig(
            cluster_id=cluster_id,
            node_id=config.node_id,
            session_timeout_ms=kraft.session_timeout_ms,
            default_num_partitions=config.num_partitions,
            default_replication_factor=config.default_replication_factor,
            static_broker_configs={
                name: config.properties[name]
                for name in ("unclean.leader.election.enable", "min.insync.replicas")
            },
        )
        self.controller: QuorumController | None = None
        self.metadata_log: MetadataLog | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._appended = asyncio.Event()
        self._handlers: dict[int, ControllerHandler] = {
            ApiKey.API_VERSIONS: self._api_versions,
            ApiKey.FETCH: self._fetch,
            ApiKey.CREATE_TOPICS: self._create_topics,
            ApiKey.DELETE_TOPICS: self._delete_topics,
            ApiKey.CREATE_PARTITIONS: self._create_partitions,
            ApiKey.INCREMENTAL_ALTER_CONFIGS: self._incremental_alter_configs,
            kio_adapter.ALTER_PARTITION: self._alter_partition,
            kio_adapter.BROKER_REGISTRATION: self._broker_registration,
            kio_adapter.BROKER_HEARTBEAT: self._broker_heartbeat,
            kio_adapter.ALLOCATE_PRODUCER_IDS: self._allocate_producer_ids,
        }

    # -- start and stop --------------------------------------------------------------------

    def load(self) -> None:
        """Open the metadata log and replay it into a fresh QuorumController."""
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        self.metadata_log = MetadataLog.open(self.config.log_dir, now_ms(), self.files)
        self.controller = QuorumController(self.controller_config, new_random())
        replayed = 0
        for offset, value in self.metadata_log.entries():
            self.controller.replay(decode_record(value), offset)
            replayed += 1
        self.controller.next_write_offset = self.metadata_log.end_offset
        if self.metadata_log.end_offset == 0:
            self._commit(self.controller.bootstrap())
        logger.info(
            "controller %d replayed %d metadata records (log end offset %d)",
            self.node_id,
            replayed,
            self.metadata_log.end_offset,
        )

    async def start(self) -> None:
        self.load()
        listener = self.listener
        self._server = await asyncio.start_server(
            self._serve_connection, host=listener.host, port=listener.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.get_running_loop().create_task(self._tick_loop())]
        logger.info(
            "Odradek controller %d (cluster %s) listening on %s:%d, metadata log in %s",
            self.node_id,
            self.cluster_id,
            listener.host,
            self.port,
            self.config.log_dir,
        )

    async def stop(self) -> None:
        """Stop within a few seconds (each step bounded, see shutdown.py)."""
        await cancel_and_wait([*self._tasks, *self._connections], "the controller's tasks")
        self._tasks = []
        if self._server is not None:
            self._server.close()
            await bounded(self._server.wait_closed(), "closing the controller listener", 2.0)
            self._server = None
        if self.metadata_log is not None:
            self.metadata_log.close()
            self.metadata_log = None
        logger.info("controller stopped cleanly")

    # -- writes ----------------------------------------------------------------------------

    def _commit(self, records: Sequence[MetadataRecord]) -> None:
        """Append the records of one ControllerResult as one batch and fsync them."""
        if not records:
            return
        assert self.metadata_log is not None
        assert self.controller is not None
        expected = self.controller.next_write_offset - len(records)
        try:
            first = self.metadata_log.append([encode_record(r) for r in records], now_ms())
        except OSError as error:
            raise MetadataLogFailedError(f"metadata log append failed: {error}") from error
        if first != expected:
            raise MetadataLogFailedError(f"metadata log at {first}, controller assumed {expected}")
        self._appended.set()
        self._appended = asyncio.Event()

    def _require(self) -> QuorumController:
        assert self.controller is not None
        return self.controller

    async def _tick_loop(self) -> None:
        kraft = self.config.kraft
        assert kraft is not None
        interval_s = max(min(kraft.session_timeout_ms / 10, 250), 10) / 1000
        while True:
            await asyncio.sleep(interval_s)
            records = self._require().tick(now_ms())
            if records:
                self._commit(records)
                logger.info("controller tick wrote %d records", len(records))

    # -- the listener ----------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                (size,) = _INT32.unpack(await reader.readexactly(4))
                if size < 0 or size > self.config.socket_request_max_bytes:
                    return
                frame = await reader.readexactly(size)
                response = await self._answer(frame)
                if response is None:
                    return
                writer.writelines(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except MetadataLogFailedError:
            logger.critical("metadata log failed; the controller stops", exc_info=True)
            asyncio.get_running_loop().stop()
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer(self, frame: bytes) -> list[bytes | memoryview] | None:
        try:
            header, position = read_request_header(
                frame, lambda key, version: _supported(key, version) and is_flexible(key, version)
            )
        except RemoteProtocolError as error:
            logger.warning("malformed request header: %s", error)
            return None
        if not _supported(header.api_key, header.api_version):
            if header.api_key == ApiKey.API_VERSIONS:
                body = make(
                    response_type(ApiKey.API_VERSIONS, 0),
                    error_code=ErrorCode.unsupported_version,
                    api_keys=self._api_keys(0),
                )
                return frame_response(header, [encode_entity(body)])
            logger.warning(
                "controller: unsupported API key %d v%d", header.api_key, header.api_version
            )
            return None
        try:
            request = read_request_body(header, frame, position)
        except RemoteProtocolError as error:
            logger.warning("malformed request: %s", error)
            return None
        response = await self._handlers[header.api_key](header, request)
        return frame_response(header, [encode_entity(response)])

    # -- handlers --------------------------------------------------------------------------

    def _api_keys(self, version: int) -> tuple[Any, ...]:
        entry = nested(response_module(ApiKey.API_VERSIONS, version), "ApiVersion")
        return tuple(
            make(entry, api_key=key, min_version=low, max_version=high)
            for key, (low, high) in sorted(CONTROLLER_APIS.items())
        )

    async def _api_versions(self, header: RequestHeader, request: Any) -> Any:
        return make(
            response_type(ApiKey.API_VERSIONS, header.api_version),
            error_code=ErrorCode.none,
            api_keys=self._api_keys(header.api_version),
            throttle_time=0,
        )

    async def _broker_registration(self, header: RequestHeader, request: Any) -> Any:
        result = self._require().handle_broker_registration(
            kio_adapter.broker_registration_request(request), now_ms()
        )
        self._commit(result.records)
        if result.response.error_code is ErrorCode.none:
            logger.info(
                "broker %d registered with epoch %d",
                request.broker_id,
                result.response.broker_epoch,
            )
        return kio_adapter.broker_registration_response(result.response, header.api_version)

    async def _broker_heartbeat(self, header: RequestHeader, request: Any) -> Any:
        result = self._require().handle_broker_heartbeat(
            kio_adapter.broker_heartbeat_request(request), now_ms()
        )
        self._commit(result.records)
        return kio_adapter.broker_heartbeat_response(result.response, header.api_version)

    async def _alter_partition(self, header: RequestHeader, request: Any) -> Any:
        result = self._require().handle_alter_partition(
            kio_adapter.alter_partition_request(request), now_ms(), header.api_version
        )
        self._commit(result.records)
        return kio_adapter.alter_partition_response(result.response, header.api_version)

    async def _allocate_producer_ids(self, header: RequestHeader, request: Any) -> Any:
        result = self._require().handle_allocate_producer_ids(
            kio_adapter.allocate_producer_ids_request(request), now_ms()
        )
        self._commit(result.records)
        return kio_adapter.allocate_producer_ids_response(result.response, header.api_version)

    async def _create_topics(self, header: RequestHeader, request: Any) -> Any:
        controller = self._require()
        topics = [
            CreatableTopic(
                name=topic.name,
                num_partitions=int(topic.num_partitions),
                replication_factor=int(topic.replication_factor),
                assignments=tuple(
                    (int(a.partition_index), tuple(int(b) for b in a.broker_ids))
                    for a in topic.assignments
                ),
                configs=tuple((c.name, c.value) for c in topic.configs),
            )
            for topic in request.topics
        ]
        rows: list[dict[str, Any]] = []
        if request.validate_only:
            for topic in topics:
                exists = topic.name in controller.replication.topics_by_name
                rows.append(
                    {
                        "name": topic.name,
                        "error_code": ErrorCode.topic_already_exists if exists else ErrorCode.none,
                        "error_message": f"Topic '{topic.name}' already exists."
                        if exists
                        else None,
                        "topic_id": uuid.UUID(int=0),
                        "num_partitions": topic.num_partitions,
                        "replication_factor": topic.replication_factor,
                        "configs": None,
                    }
                )
        else:
            result = controller.handle_create_topics(topics, now_ms())
            self._commit(result.records)
            for created in result.response:
                rows.append(
                    {
                        "name": created.name,
                        "error_code": created.error_code,
                        "error_message": created.error_message,
                        "topic_id": created.topic_id or uuid.UUID(int=0),
                        "num_partitions": created.num_partitions,
                        "replication_factor": created.replication_factor,
                        "configs": None if created.error_code is not ErrorCode.none else (),
                    }
                )
        return _results_response(
            ApiKey.CREATE_TOPICS, header.api_version, "topics", "CreatableTopicResult", rows
        )

    async def _delete_topics(self, header: RequestHeader, request: Any) -> Any:
        version = header.api_version
        if version >= 6:
            names = [t.name for t in request.topics if t.name is not None]
            topic_ids = [t.topic_id for t in request.topics if t.name is None]
        else:
            names, topic_ids = list(request.topic_names), []
        if not self.config.delete_topic_enable:
            rows = [
                {
                    "name": name,
                    "topic_id": uuid.UUID(int=0),
                    "error_code": ErrorCode.topic_deletion_disabled,
                    "error_message": "Topic deletion is disabled (delete.topic.enable=false).",
                }
                for name in names
            ]
        else:
            result = self._require().handle_delete_topics(names, topic_ids, now_ms())
            self._commit(result.records)
            rows = [
                {
                    "name": deleted.name,
                    "topic_id": deleted.topic_id or uuid.UUID(int=0),
                    "error_code": deleted.error_code,
                    "error_message": deleted.error_message,
                }
                for deleted in result.response
            ]
        return _results_response(
            ApiKey.DELETE_TOPICS, version, "responses", "DeletableTopicResult", rows
        )

    async def _create_partitions(self, header: RequestHeader, request: Any) -> Any:
        topics = [
            CreatePartitionsTopic(
                name=topic.name,
                count=int(topic.count),
                assignments=None
                if topic.assignments is None
                else tuple(tuple(int(b) for b in a.broker_ids) for a in topic.assignments),
            )
            for topic in request.topics
        ]
        controller = self._require()
        if request.validate_only:
            # Kafka's ReplicationControlManager.createPartitions checks every topic the same
            # way and only leaves the records out: the records here are dropped, not replayed.
            _records, results = controller.replication.create_partitions(topics)
        else:
            result = controller.handle_create_partitions(topics, now_ms())
            self._commit(result.records)
            results = list(result.response)
        rows = [
            {
                "name": created.name,
                "error_code": created.error_code,
                "error_message": created.error_message,
            }
            for created in results
        ]
        return _results_response(
            ApiKey.CREATE_PARTITIONS,
            header.api_version,
            "results",
            "CreatePartitionsTopicResult",
            rows,
        )

    async def _incremental_alter_configs(self, header: RequestHeader, request: Any) -> Any:
        """IncrementalAlterConfigs forwarded by a broker (which checked the values against its
        own rules first): the changes become ConfigRecords that every broker replays."""
        resources = [
            AlterConfigsResource(
                int(resource.resource_type),
                resource.resource_name,
                tuple(
                    AlterableConfig(c.name, int(c.config_operation), c.value)
                    for c in resource.configs
                ),
            )
            for resource in request.resources
        ]
        controller = self._require()
        if request.validate_only:
            _records, answers = controller.configs.incremental_alter_configs(
                resources, lambda name: name in controller.replication.topics_by_name
            )
            responses = tuple(answers)
        else:
            result = controller.handle_incremental_alter_configs(resources, now_ms())
            self._commit(result.records)
            responses = result.response
        return _results_response(
            ApiKey.INCREMENTAL_ALTER_CONFIGS,
            header.api_version,
            "responses",
            "AlterConfigsResourceResponse",
            (
                {
                    "error_code": answer.error_code,
                    "error_message": answer.error_message,
                    "resource_type": answer.resource_type,
                    "resource_name": answer.resource_name,
                }
                for answer in responses
            ),
        )

    async def _fetch(self, header: RequestHeader, request: Any) -> Any:
        """Fetch v12 of `__cluster_metadata`-0 only: the metadata log, long-polled."""
        module = response_module(ApiKey.FETCH, header.api_version)
        topic_type = nested(module, "FetchableTopicResponse")
        partition_type = nested(module, "PartitionData")
        log = self.metadata_log
        assert log is not None
        wanted = [
            (topic.topic, partition) for topic in request.topics for partition in topic.partitions
        ]
        metadata = [
            p for t, p in wanted if t == METADATA_TOPIC and p.partition == METADATA_PARTITION
        ]
        if metadata and metadata[0].fetch_offset >= log.end_offset:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(request.max_wait.total_seconds()):
                    await self._appended.wait()
        responses = []
        for topic_name, partition in wanted:
            error = ErrorCode.none
            records: bytes = b""
            if topic_name != METADATA_TOPIC or partition.partition != METADATA_PARTITION:
                error = ErrorCode.unknown_topic_or_partition
            else:
                try:
                    records = bytes(
                        log.read(partition.fetch_offset, max(partition.partition_max_bytes, 1))
                    )
                except OffsetOutOfRange:
                    error = ErrorCode.offset_out_of_range
            responses.append(
                make(
                    topic_type,
                    topic=topic_name,
                    partitions=(
                        make(
                            partition_type,
                            partition_index=partition.partition,
                            error_code=error,
                            high_watermark=log.end_offset,
                            last_stable_offset=log.end_offset,
                            log_start_offset=log.log_start_offset,
                            aborted_transactions=None,
                            preferred_read_replica=-1,
                            records=records,
                        ),
                    ),
                )
            )
        return make(
            response_type(ApiKey.FETCH, header.api_version),
            throttle_time=0,
            error_code=ErrorCode.none,
            session_id=0,
            responses=tuple(responses),
        )
