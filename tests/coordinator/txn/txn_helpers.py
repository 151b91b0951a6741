"""A transaction coordinator wired to an in-memory ``__transaction_state`` log, for tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from kio.schema.errors import ErrorCode

from odradek.coordinator.txn import (
    AddPartitionsToTxnResult,
    EndTxnResult,
    InitProducerIdResult,
    TopicPartition,
    TransactionConfig,
    TransactionCoordinator,
    TransactionRecord,
    TxnMarkers,
)

R = TypeVar("R")

TIMEOUT_MS = 60_000


def offsets_partition_for(group_id: str) -> int:
    return sum(group_id.encode()) % 50


def tps(*pairs: tuple[str, int]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in pairs]


class Harness:
    """Appends every write to ``self.log`` and reports success, unless told to fail it."""

    def __init__(
        self,
        config: TransactionConfig | None = None,
        log: Iterable[TransactionRecord] = (),
        now_ms: int = 0,
    ) -> None:
        self.config = config or TransactionConfig()
        self.log: list[TransactionRecord] = list(log)
        self.coordinator = TransactionCoordinator(offsets_partition_for, self.config)
        for record in self.log:
            self.coordinator.replay(record)
        self.start = self.commit(*self.coordinator.start(now_ms))

    def commit(self, result: R, records: list[TransactionRecord]) -> R:
        write_id: int | None = getattr(result, "write_id")  # noqa: B009
        if records:
            assert write_id is not None
            self.log.extend(records)
            self.coordinator.write_succeeded(write_id)
        else:
            assert write_id is None
        return result

    def fail(
        self,
        result: Any,
        records: list[TransactionRecord],
        error: ErrorCode = ErrorCode.not_enough_replicas,
    ) -> ErrorCode:
        assert records
        assert result.write_id is not None
        return self.coordinator.write_failed(result.write_id, error)

    def restart(self, now_ms: int = 0) -> Harness:
        return Harness(self.config, self.log, now_ms)

    # conveniences that append and report success

    def init(
        self,
        transactional_id: str | None,
        now_ms: int = 0,
        timeout_ms: int = TIMEOUT_MS,
        expected: tuple[int, int] = (-1, -1),
    ) -> InitProducerIdResult:
        return self.commit(
            *self.coordinator.init_producer_id(
                transactional_id, timeout_ms, now_ms, expected[0], expected[1]
            )
        )

    def add(
        self,
        transactional_id: str,
        producer: InitProducerIdResult | tuple[int, int],
        partitions: Iterable[TopicPartition],
        now_ms: int = 0,
    ) -> AddPartitionsToTxnResult:
        producer_id, epoch = _producer(producer)
        return self.commit(
            *self.coordinator.add_partitions_to_txn(
                transactional_id, producer_id, epoch, partitions, now_ms
            )
        )

    def end(
        self,
        transactional_id: str,
        producer: InitProducerIdResult | tuple[int, int],
        commit: bool,
        now_ms: int = 0,
    ) -> EndTxnResult:
        producer_id, epoch = _producer(producer)
        return self.commit(
            *self.coordinator.end_txn(transactional_id, producer_id, epoch, commit, now_ms)
        )

    def finish(self, markers: TxnMarkers | None, now_ms: int = 0) -> ErrorCode:
        assert markers is not None
        return self.commit(*self.coordinator.markers_written(markers, now_ms)).error

    def state_name(self, transactional_id: str) -> str | None:
        metadata = self.coordinator.transaction(transactional_id)
        return None if metadata is None else metadata.state.kafka_name


def _producer(producer: InitProducerIdResult | tuple[int, int]) -> tuple[int, int]:
    if isinstance(producer, InitProducerIdResult):
        return producer.producer_id, producer.producer_epoch
    return producer
