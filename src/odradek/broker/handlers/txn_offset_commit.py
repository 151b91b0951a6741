"""TxnOffsetCommit: stage a group's offsets in the producer's transaction.

The group's `__consumer_offsets` partition must be in the ongoing transaction (AddOffsetsToTxn;
checked with the transaction coordinator as KIP-890 part 1 does), the group coordinator checks
the generation / member (KIP-447), and the offsets are appended as the producer's transactional
batch: they become visible to OffsetFetch only when the COMMIT marker lands, and an ABORT drops
them. v5 is transaction version 2 (KIP-890 part 2): the request itself adds the partition to the
transaction, as AddOffsetsToTxn would (the client sends none).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import dispatcher
from odradek.broker.context import BrokerContext
from odradek.broker.group_runtime import OFFSETS_TOPIC, CoordinatorNotAvailableError
from odradek.broker.handlers._offsets import known_partitions, partition_commits, response_topics
from odradek.coordinator.group import OffsetCommitResponse, TxnCommitRequest
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, response_type

#: TxnOffsetCommit v5 is the first version of transaction version 2 (TxnOffsetCommitRequest.json).
TRANSACTION_V2_VERSION = 5
#: TxnOffsetCommit v4 is the first whose client knows TRANSACTION_ABORTABLE (KIP-890; Kafka's
#: AddPartitionsToTxnManager.txnOffsetCommitRequestVersionToTransactionSupportedOperation).
TRANSACTION_ABORTABLE_VERSION = 4


def _verification_error(error: ErrorCode, api_version: int) -> ErrorCode:
    """The transaction coordinator's answer as this request answers it (Kafka's
    AddPartitionsToTxnManager): PRODUCER_FENCED is INVALID_PRODUCER_EPOCH,
    NOT_LEADER_OR_FOLLOWER NOT_COORDINATOR, and TRANSACTION_ABORTABLE is INVALID_TXN_STATE
    for clients older than v4."""
    if error == ErrorCode.producer_fenced:
        return ErrorCode.invalid_producer_epoch
    if error == ErrorCode.not_leader_or_follower:
        # This broker no longer leads the group's `__consumer_offsets` partition: it is not
        # the group coordinator, which the client looks up again on NOT_COORDINATOR only.
        return ErrorCode.not_coordinator
    if error == ErrorCode.transaction_abortable and api_version < TRANSACTION_ABORTABLE_VERSION:
        return ErrorCode.invalid_txn_state
    return error


@dispatcher.register(ApiKey.TXN_OFFSET_COMMIT, 0, 5)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    version = header.api_version
    errors, known = known_partitions(context, request.topics)
    valid = partition_commits(known)
    if valid:
        error = await _verify(context, request, add=version >= TRANSACTION_V2_VERSION)
        error = _verification_error(error, version)
        if error == ErrorCode.none:
            commit = TxnCommitRequest(
                transactional_id=request.transactional_id,
                group_id=request.group_id,
                producer_id=request.producer_id,
                producer_epoch=request.producer_epoch,
                generation_id=getattr(request, "generation_id", -1),
                member_id=getattr(request, "member_id", ""),
                group_instance_id=getattr(request, "group_instance_id", None),
                offsets=valid,
            )
            try:
                answer: OffsetCommitResponse = await context.groups.run(
                    lambda reference, now: context.groups.coordinator.txn_commit_offsets(
                        reference, commit, now
                    ),
                    group_id=request.group_id,
                )
            except CoordinatorNotAvailableError as unavailable:
                answer = OffsetCommitResponse({}).with_error(unavailable.error_code)
                error = unavailable.error_code
        else:
            answer = OffsetCommitResponse({})
        for topic_name, partitions in valid.items():
            for index in partitions:
                errors[topic_name][index] = error
        for topic_name, partition_errors in answer.errors.items():
            errors[topic_name].update(partition_errors)
    return make(
        response_type(ApiKey.TXN_OFFSET_COMMIT, version),
        throttle_time=0,
        topics=response_topics(
            ApiKey.TXN_OFFSET_COMMIT, version, "TxnOffsetCommitResponse", errors
        ),
    )


async def _verify(context: BrokerContext, request: Any, add: bool) -> ErrorCode:
    """Is the group's `__consumer_offsets` partition in this producer's transaction? With
    `add` (KIP-890 part 2) it joins the transaction first. On a cluster the transaction
    coordinator may be another broker (TxnRuntime.verify_partition asks it)."""
    if not request.group_id:
        return ErrorCode.invalid_group_id
    if not context.groups.ensure_offsets_topic():
        return ErrorCode.coordinator_not_available
    return await context.transactions.verify_partition(
        request.transactional_id,
        request.producer_id,
        request.producer_epoch,
        OFFSETS_TOPIC,
        context.groups.coordinator.partition_for(request.group_id),
        add=add,
    )
