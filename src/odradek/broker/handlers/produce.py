"""Produce: validate batch headers and CRCs, assign offsets, append the raw bytes.

No record is decoded here, except in two cases (Kafka's LogValidator): on a compacted topic every
record must have a key, so its batches are decompressed and scanned first, and a batch with a
keyless record is refused whole (INVALID_RECORD, the records at fault in v8+ record_errors); on a
topic whose `compression.type` is a codec (not `producer`), a batch in another codec is
recompressed. Producer state lives in the log: a retry of one of the producer's last five batches
is acknowledged with its original offsets and not appended again; a sequence gap gets
OUT_OF_ORDER_SEQUENCE_NUMBER and a fenced epoch INVALID_PRODUCER_EPOCH, with nothing appended.
KIP-890 part 1: the first transactional batch of a producer on a partition is checked
with the transaction coordinator (in-process and synchronous, or on a cluster with
AddPartitionsToTxn to the coordinator's broker) and refused unless the partition is
in the producer's ongoing transaction: TRANSACTION_ABORTABLE to v11+ clients, INVALID_TXN_STATE
to older ones. The records' shape comes first, as Kafka's ProduceRequest.validateRecords checks
it: one complete batch of magic 2 (INVALID_RECORD otherwise).

acks=0 gets no response (a failure closes the connection instead, as Kafka does), acks=1 is
answered once the bytes are with the OS, acks=all once the in-sync replicas have them: on one
node the ISR is the leader alone, so with `odradek.acks.all.fsync` (default) acks=all waits for an
fdatasync shared by every produce that arrived meanwhile (group commit).

In a cluster (`process.roles`), each partition is first routed by the replica manager: a
broker that does not lead answers NOT_LEADER_OR_FOLLOWER with the leader (CurrentLeader and
NodeEndpoints from v10, KIP-951), LEADER_NOT_AVAILABLE when there is none; acks=all gets
NOT_ENOUGH_REPLICAS before the append while the ISR is below min.insync.replicas, then waits
until the high watermark passes the batch (NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank
below the minimum meanwhile, REQUEST_TIMED_OUT at the request's timeout); acks=1 is answered
after the leader's append.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.purgatory import GroupCommit
from odradek.broker.replica_manager import HostedPartition
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader
from odradek.protocol.hot_encoders import (
    LeaderIdAndEpoch,
    ProducePartitionResult,
    ProduceResponseData,
    ProduceTopicResult,
    encode_produce_response,
)
from odradek.protocol.record_batch import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_NONE,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    BatchHeader,
    InvalidRecords,
    check_produce_records,
    recompress_batches,
    validate_batches,
    validate_keys_for_compaction,
    validate_timestamps,
)
from odradek.storage.errors import (
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
    StorageError,
)
from odradek.storage.log import LogConfig, PartitionLog

logger = logging.getLogger(__name__)

IN_SYNC_REPLICAS = 1  # one node: the leader is the whole ISR
#: Produce v10 is the first with CurrentLeader and NodeEndpoints (KIP-951).
CURRENT_LEADER_VERSION = 10

#: Produce v11 is the first whose client knows TRANSACTION_ABORTABLE (KIP-890; Kafka's
#: AddPartitionsToTxnManager.produceRequestVersionToTransactionSupportedOperation).
TRANSACTION_ABORTABLE_VERSION = 11

# Retriable coordinator answers that older clients may not retry: Kafka's ReplicaManager turns
# them into NOT_ENOUGH_REPLICAS, which clients retry without a metadata refresh.
_RETRY_AS_NOT_ENOUGH_REPLICAS = frozenset(
    {
        ErrorCode.network_exception,
        ErrorCode.coordinator_load_in_progress,
        ErrorCode.coordinator_not_available,
        ErrorCode.not_coordinator,
    }
)


def _verification_error(error: ErrorCode, api_version: int) -> tuple[ErrorCode, str | None]:
    """What the transaction coordinator's answer to a KIP-890 check becomes in a Produce
    response of `api_version`, with its message (Kafka's AddPartitionsToTxnManager, then
    ReplicaManager's post-verification mapping): PRODUCER_FENCED is INVALID_PRODUCER_EPOCH;
    TRANSACTION_ABORTABLE stays itself from v11 on and is INVALID_TXN_STATE before;
    CONCURRENT_TRANSACTIONS stays itself on v12 (transaction version 2) and is
    NOT_ENOUGH_REPLICAS before, like the coordinator-unavailable answers; anything else passes."""
    if error == ErrorCode.producer_fenced:
        error = ErrorCode.invalid_producer_epoch
    elif error == ErrorCode.transaction_abortable and api_version < TRANSACTION_ABORTABLE_VERSION:
        error = ErrorCode.invalid_txn_state
    if error == ErrorCode.invalid_txn_state:
        return error, "Partition was not added to the transaction"
    if error in _RETRY_AS_NOT_ENOUGH_REPLICAS or (
        error == ErrorCode.concurrent_transactions and api_version < TRANSACTION_V2_VERSION
    ):
        return ErrorCode.not_enough_replicas, (
            "Unable to verify the partition has been added to the transaction. "
            f"Underlying error: {error.name.upper()}"
        )
    return error, None


def _min_insync_replicas(context: BrokerContext, topic: str) -> int:
    metadata = context.logs.topics().get(topic)
    override = metadata.config.get("min.insync.replicas") if metadata is not None else None
    return int(override) if override else context.config.min_insync_replicas


#: Produce v12 is transaction version 2 (KIP-890 part 2): a transactional batch adds its
#: partition to the producer's transaction itself. v11 only adds an error code.
TRANSACTION_V2_VERSION = 12


@dispatcher.register(ApiKey.PRODUCE, 3, 12)
async def handle(
    context: BrokerContext, header: RequestHeader, request: Any
) -> list[bytes | memoryview] | None:
    acks = request.acks
    transactional_id = request.transactional_id
    now = context.now_ms()
    durable_waits: list[tuple[int, int, asyncio.Task[ErrorCode | None]]] = []
    # In a cluster (process.roles): the replica manager decides leadership and acks=all.
    replicas = context.cluster.replicas if context.cluster is not None else None
    leaders: set[int] = set()
    hosted: HostedPartition | None = None
    results: list[tuple[str, list[ProducePartitionResult]]] = []
    for topic_data in request.topic_data:
        name = topic_data.name
        partition_results: list[ProducePartitionResult] = []
        results.append((name, partition_results))
        for partition_data in topic_data.partition_data:
            index = partition_data.index
            if acks not in (-1, 0, 1):
                partition_results.append(_error(index, ErrorCode.invalid_required_acks))
                continue
            log = context.logs.log(name, index)
            if log is None and (
                replicas is None or replicas.route(name, index)[1] is ErrorCode.none
            ):
                # A partition the cluster knows but this broker does not host gets
                # NOT_LEADER_OR_FOLLOWER from the routing below, as Kafka answers it.
                partition_results.append(_error(index, ErrorCode.unknown_topic_or_partition))
                continue
            records = partition_data.records
            try:
                if records is None:
                    raise InvalidRecords(ErrorCode.invalid_record, "records are null")
                # Kafka's ProduceRequest.validateRecords comes first (KafkaApis), the
                # min.insync.replicas check only at the append.
                size = check_produce_records(records, header.api_version)
                if size != len(records):
                    # Trailing bytes that are no complete batch: trimmed, as Kafka does.
                    records = memoryview(records)[:size]
            except InvalidRecords as error:
                partition_results.append(_error(index, error.error_code, message=str(error)))
                continue
            if replicas is not None:
                hosted, route_error, leader = replicas.route(name, index)
                if route_error is not ErrorCode.none:
                    if leader is not None and header.api_version >= CURRENT_LEADER_VERSION:
                        leaders.add(leader.leader_id)
                    else:
                        leader = None
                    partition_results.append(_error(index, route_error, current_leader=leader))
                    continue
                if hosted is not None:
                    append_error = hosted.state.check_before_append(acks)
                    if append_error is not None:
                        partition_results.append(_error(index, append_error))
                        continue
            if (
                hosted is None
                and acks == -1
                and _min_insync_replicas(context, name) > IN_SYNC_REPLICAS
            ):
                partition_results.append(_error(index, ErrorCode.not_enough_replicas))
                continue
            if log is None:  # routed above: never reached
                partition_results.append(_error(index, ErrorCode.unknown_topic_or_partition))
                continue
            try:
                headers = validate_batches(records, log.config.max_message_bytes)
                validate_timestamps(records, headers, now, *log.config.timestamp_bounds_ms)
                if log.config.compacts:
                    # Not the zero-decode hot path: only compacted topics look inside.
                    validate_keys_for_compaction(records, headers, f"{name}-{index}")
                if log.config.compression_type != "producer":
                    records, headers = _recompress(records, headers, log.config)
            except InvalidRecords as error:
                partition_results.append(
                    _error(
                        index,
                        error.error_code,
                        message=str(error) or None,
                        record_errors=error.record_errors,
                    )
                )
                continue
            first = headers[0]
            if first.is_transactional and transactional_id is not None:
                verify_error = await _verify_transaction(
                    context,
                    transactional_id,
                    first,
                    name,
                    index,
                    log,
                    add=header.api_version >= TRANSACTION_V2_VERSION,
                )
                if verify_error != ErrorCode.none:
                    code, message = _verification_error(verify_error, header.api_version)
                    partition_results.append(_error(index, code, message=message))
                    continue
            try:
                info = log.append(records, headers, now)
            except OutOfOrderSequence as error:
                partition_results.append(
                    _error(index, ErrorCode.out_of_order_sequence_number, message=str(error))
                )
                continue
            except InvalidProducerEpoch as error:
                partition_results.append(
                    _error(index, ErrorCode.invalid_producer_epoch, message=str(error))
                )
                continue
            except InvalidTxnState as error:
                partition_results.append(
                    _error(index, ErrorCode.invalid_txn_state, message=str(error))
                )
                continue
            except (OSError, StorageError) as error:
                logger.error("append to %s-%d failed: %s", name, index, error)
                partition_results.append(_error(index, ErrorCode.kafka_storage_error))
                continue
            if hosted is not None:
                if not info.duplicate:
                    replicas.after_leader_append(hosted)  # type: ignore[union-attr]
            elif not info.duplicate:
                # One node: every append is immediately in the whole ISR.
                log.high_watermark = log.log_end_offset
                context.data_arrived.notify((name, index))
            partition_results.append(
                ProducePartitionResult(
                    index=index,
                    error_code=ErrorCode.none,
                    base_offset=info.first_offset,
                    log_append_time_ms=info.log_append_time_ms,
                    log_start_offset=info.log_start_offset,
                )
            )
            if acks == -1 and hosted is not None:
                waiter = asyncio.get_running_loop().create_task(
                    replicas.wait_for_acks_all(  # type: ignore[union-attr]
                        hosted, info.last_offset, int(request.timeout.total_seconds() * 1000)
                    )
                )
                durable_waits.append((len(results) - 1, len(partition_results) - 1, waiter))
            elif acks == -1 and context.config.acks_all_fsync:
                commit = context.group_commit(name, index)
                if commit is not None:
                    waiter = asyncio.get_running_loop().create_task(
                        _flushed(commit, info.last_offset + 1)
                    )
                    durable_waits.append((len(results) - 1, len(partition_results) - 1, waiter))
    if durable_waits:
        await asyncio.wait([waiter for _t, _p, waiter in durable_waits])
        for topic_index, partition_index, waiter in durable_waits:
            wait_error = (
                ErrorCode.kafka_storage_error if waiter.exception() is not None else waiter.result()
            )
            if wait_error is not None and wait_error is not ErrorCode.none:
                previous = results[topic_index][1][partition_index]
                results[topic_index][1][partition_index] = _error(previous.index, wait_error)
    if acks == 0:
        failed = [
            f"{name}-{result.index}: {ErrorCode(result.error_code).name.upper()}"
            for name, partitions in results
            for result in partitions
            if result.error_code != ErrorCode.none
        ]
        if failed:
            # KafkaApis: an acks=0 producer expects no answer, so an error can only be told by
            # closing the connection; the client notices and refreshes its metadata.
            raise dispatcher.CloseConnection(
                f"error during produce request with correlation id {header.correlation_id} "
                f"from client id {header.client_id!r} with ack=0: {', '.join(failed)}"
            )
        return None
    response = ProduceResponseData(
        topics=[
            ProduceTopicResult(name=name, partitions=partitions) for name, partitions in results
        ],
        throttle_time_ms=0,
        node_endpoints=replicas.node_endpoints(leaders) if leaders and replicas else (),
    )
    return [encode_produce_response(header.api_version, response)]


_CODECS = {
    "uncompressed": COMPRESSION_NONE,
    "gzip": COMPRESSION_GZIP,
    "snappy": COMPRESSION_SNAPPY,
    "lz4": COMPRESSION_LZ4,
    "zstd": COMPRESSION_ZSTD,
}


def _recompress(
    records: bytes | memoryview, headers: list[BatchHeader], config: LogConfig
) -> tuple[bytes | memoryview, list[BatchHeader]]:
    """A topic with a `compression.type` codec gets its batches in that codec (Kafka's
    LogValidator); batches already in it pass untouched. Raises InvalidRecords."""
    codec = _CODECS[config.compression_type]
    if all(header.compression == codec for header in headers):
        return records, headers
    level = {
        COMPRESSION_GZIP: config.compression_gzip_level,
        COMPRESSION_LZ4: config.compression_lz4_level,
        COMPRESSION_ZSTD: config.compression_zstd_level,
    }.get(codec)
    if level == -1:  # gzip's "default" (Deflater.DEFAULT_COMPRESSION)
        level = None
    return recompress_batches(records, headers, codec, level, config.max_message_bytes)


async def _verify_transaction(
    context: BrokerContext,
    transactional_id: str,
    header: BatchHeader,
    topic: str,
    index: int,
    log: PartitionLog,
    add: bool,
) -> ErrorCode:
    """KIP-890: a transactional batch that would start the producer's transaction on this
    partition must belong to a partition in its ongoing transaction; with `add` (part 2,
    Produce v12) the batch adds the partition first. Batches of a transaction already open
    here are not asked about again (as Kafka's hasOngoingTransaction). On a cluster the
    transaction coordinator may be another broker (TxnRuntime.verify_partition)."""
    producer_id, producer_epoch = header.producer_id, header.producer_epoch
    if log.has_ongoing_transaction(producer_id, producer_epoch):
        return ErrorCode.none
    return await context.transactions.verify_partition(
        transactional_id, producer_id, producer_epoch, topic, index, add=add
    )


async def _flushed(commit: GroupCommit, end_offset: int) -> None:
    await commit.wait_flushed(end_offset)


def _error(
    index: int,
    error_code: ErrorCode,
    message: str | None = None,
    record_errors: tuple[tuple[int, str | None], ...] = (),
    current_leader: LeaderIdAndEpoch | None = None,
) -> ProducePartitionResult:
    return ProducePartitionResult(
        index=index,
        error_code=error_code,
        base_offset=-1,
        log_append_time_ms=-1,
        log_start_offset=-1,
        record_errors=record_errors,
        error_message=message,
        current_leader=current_leader,
    )
