"""The guarantee toolkit: one switch (at-most-once, at-least-once, exactly-once) on confluent-kafka.

It never imports the broker: it works unchanged against Odradek, Apache Kafka or any Kafka.

    from odradek.client import Guarantee, Processor, SqliteSink, preflight

    processor = Processor("127.0.0.1:9092", "billing", ["orders"], "exactly-once",
                          apply_order, sink=SqliteSink("billing.db"))
    stats = processor.run()
"""

from odradek.client.guarantee import (
    CommitPoint,
    Guarantee,
    IncompatibleSettingsError,
    TopicRequirements,
    UnknownGuaranteeError,
)
from odradek.client.idempotent import SKIPPED, IdempotentConsumer
from odradek.client.messages import (
    MESSAGE_ID_HEADER,
    GuaranteeProducer,
    message_id,
    new_message_id,
    with_message_id,
)
from odradek.client.preflight import Finding, PreflightReport, Severity, preflight
from odradek.client.processor import OutputRecord, Processor, RunStats
from odradek.client.sinks import Claim, FencedError, PostgresSink, Sink, SqliteSink

__all__ = [
    "MESSAGE_ID_HEADER",
    "SKIPPED",
    "Claim",
    "CommitPoint",
    "FencedError",
    "Finding",
    "Guarantee",
    "GuaranteeProducer",
    "IdempotentConsumer",
    "IncompatibleSettingsError",
    "OutputRecord",
    "PostgresSink",
    "PreflightReport",
    "Processor",
    "RunStats",
    "Severity",
    "Sink",
    "SqliteSink",
    "TopicRequirements",
    "UnknownGuaranteeError",
    "message_id",
    "new_message_id",
    "preflight",
    "with_message_id",
]
