"""Producer-id blocks for the brokers' transaction coordinators (KIP-730).

Kafka's ProducerIdControlManager: AllocateProducerIds hands the asking broker the next block of
`PRODUCER_ID_BLOCK_SIZE` (1000) ids and writes a ProducerIdsRecord whose `next_producer_id` is
the end of that block. Replaying the records rebuilds the counter, so a controller that restarts
never hands out a block twice: blocks are unique across brokers and strictly increasing.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from odradek.controller.cluster_control import ClusterControlManager, MetadataReplayError
from odradek.controller.messages import (
    AllocateProducerIdsRequest,
    AllocateProducerIdsResponse,
    ControllerResult,
)
from odradek.controller.records import ProducerIdsRecord

#: Kafka's ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE.
PRODUCER_ID_BLOCK_SIZE = 1000
_MAX_PRODUCER_ID = 2**63 - 1


class ProducerIdControlManager:
    """The next free producer id, from the metadata log."""

    def __init__(self, cluster: ClusterControlManager) -> None:
        self.cluster = cluster
        self.next_producer_id = 0

    def generate_next_block(
        self, request: AllocateProducerIdsRequest
    ) -> ControllerResult[AllocateProducerIdsResponse]:
        """The next block for `request.broker_id`.

        STALE_BROKER_EPOCH when the broker epoch is not its current registration's;
        UNKNOWN_SERVER_ERROR once int64 ids are exhausted (as Kafka).
        """
        error = self.cluster.check_broker_epoch(request.broker_id, request.broker_epoch)
        if error is not ErrorCode.none:
            return ControllerResult((), AllocateProducerIdsResponse(error))
        start = self.next_producer_id
        if start > _MAX_PRODUCER_ID - PRODUCER_ID_BLOCK_SIZE:
            return ControllerResult((), AllocateProducerIdsResponse(ErrorCode.unknown_server_error))
        record = ProducerIdsRecord(
            broker_id=request.broker_id,
            broker_epoch=request.broker_epoch,
            next_producer_id=start + PRODUCER_ID_BLOCK_SIZE,
        )
        response = AllocateProducerIdsResponse(ErrorCode.none, start, PRODUCER_ID_BLOCK_SIZE)
        return ControllerResult((record,), response)

    def replay(self, record: ProducerIdsRecord) -> None:
        """Raises MetadataReplayError if the record does not move the counter forward."""
        if record.next_producer_id <= self.next_producer_id:
            raise MetadataReplayError(
                f"next producer id {record.next_producer_id} is not above {self.next_producer_id}"
            )
        self.next_producer_id = record.next_producer_id
