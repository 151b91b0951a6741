"""Message ids: a header the toolkit's producer sets, so a consumer can recognise a duplicate.

An offset cannot identify a duplicate that a producer retry created (the same payload appended
twice gets two offsets); an id chosen once, before the first attempt, can.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from confluent_kafka import Message, Producer

from odradek.client.guarantee import Config, Guarantee

MESSAGE_ID_HEADER = "odradek-message-id"

Headers = Sequence[tuple[str, bytes | str | None]]


def new_message_id() -> str:
    return uuid.uuid4().hex


def with_message_id(
    headers: Headers | None = None, message_id: str | None = None
) -> list[tuple[str, bytes | str | None]]:
    """`headers` plus a message-id header (kept if already there)."""
    result = list(headers or [])
    if not any(name == MESSAGE_ID_HEADER for name, _ in result):
        result.append((MESSAGE_ID_HEADER, (message_id or new_message_id()).encode()))
    return result


def position(message: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("not a consumed message: it has no topic, partition or offset")
    return topic, partition, offset


def message_id(message: Message) -> str | None:
    """The message-id header of a consumed message, if it has one."""
    headers: Any = message.headers() or []
    for name, value in headers:
        if name == MESSAGE_ID_HEADER and value is not None:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def message_key(message: Message) -> str:
    """What identifies a message for deduplication: its id, else its position in the log."""
    found = message_id(message)
    if found is not None:
        return f"id:{found}"
    topic, partition, offset = position(message)
    return f"offset:{topic}:{partition}:{offset}"


class GuaranteeProducer:
    """A confluent-kafka producer set up for a guarantee that stamps every record with an id.

    >>> with GuaranteeProducer("127.0.0.1:9092", "at-least-once") as producer:  # doctest: +SKIP
    ...     producer.produce("notifications", b"hello", key=b"user-1")
    """

    def __init__(
        self,
        bootstrap: str,
        guarantee: Guarantee | str,
        config: Config | None = None,
        *,
        transactional_id: str | None = None,
    ) -> None:
        self.guarantee = Guarantee.parse(guarantee)
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **self.guarantee.producer_config(transactional_id),
            **(config or {}),
        }
        self.producer = Producer(settings)

    def produce(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        *,
        headers: Headers | None = None,
        partition: int | None = None,
        message_id: str | None = None,
        on_delivery: Callable[[Any, Message], None] | None = None,
    ) -> str:
        """Send one record with a message-id header; returns the id."""
        chosen = message_id or new_message_id()
        arguments: dict[str, Any] = {
            "value": value,
            "key": key,
            "headers": with_message_id(headers, chosen),
        }
        if partition is not None:
            arguments["partition"] = partition
        if on_delivery is not None:
            arguments["on_delivery"] = on_delivery
        while True:
            try:
                self.producer.produce(topic, **arguments)
                break
            except BufferError:
                self.producer.poll(0.1)  # the local queue is full: let deliveries drain it
        self.producer.poll(0)
        return chosen

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still outstanding."""
        return int(self.producer.flush(timeout))

    def __enter__(self) -> GuaranteeProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.flush()
