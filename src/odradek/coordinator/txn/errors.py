"""Error-code helpers for the transaction APIs' handlers."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

INIT_PRODUCER_ID = 22
ADD_PARTITIONS_TO_TXN = 24
ADD_OFFSETS_TO_TXN = 25
END_TXN = 26

#: The first version of each coordinator API whose response may carry PRODUCER_FENCED (KIP-588,
#: Kafka 2.7: "Version N adds the support for new error code PRODUCER_FENCED" in each schema).
#: Older versions get INVALID_PRODUCER_EPOCH instead, as Kafka's KafkaApis does.
PRODUCER_FENCED_SINCE_VERSION = {
    INIT_PRODUCER_ID: 4,
    ADD_PARTITIONS_TO_TXN: 2,
    ADD_OFFSETS_TO_TXN: 2,
    END_TXN: 2,
}


def fenced_error_for(api_key: int, version: int) -> ErrorCode:
    """The code a fenced producer gets from ``api_key`` at ``version``."""
    since = PRODUCER_FENCED_SINCE_VERSION.get(api_key)
    if since is None:
        raise ValueError(f"api key {api_key} is not a transaction coordinator API")
    return ErrorCode.producer_fenced if version >= since else ErrorCode.invalid_producer_epoch


def error_for_version(api_key: int, version: int, error: ErrorCode) -> ErrorCode:
    """Map a coordinator result's error to what ``api_key`` ``version`` may carry."""
    if error is ErrorCode.producer_fenced:
        return fenced_error_for(api_key, version)
    return error


def coordinator_error_for_append_error(append_error: ErrorCode) -> ErrorCode:
    """What a client gets when the ``__transaction_state`` append failed with ``append_error``
    (Kafka's TransactionStateManager.appendTransactionToLog)."""
    if append_error in (
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.not_enough_replicas,
        ErrorCode.not_enough_replicas_after_append,
        ErrorCode.request_timed_out,
    ):
        return ErrorCode.coordinator_not_available
    if append_error in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error):
        return ErrorCode.not_coordinator
    if append_error in (ErrorCode.message_too_large, ErrorCode.record_list_too_large):
        return ErrorCode.unknown_server_error
    return append_error
