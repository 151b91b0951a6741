"""The idempotent consumer: at-least-once delivery, applied once, as the seed suggests.

At-least-once redelivers what was processed but not yet committed, and a producer retry can append
the same record twice. `IdempotentConsumer` wraps a sink handler: in the handler's own database
transaction it records the message's id (the toolkit producer's header; the log position when
there is none) and skips a message whose id is already recorded. The record and the handler's
writes commit together, so a redelivered message is recognised however the previous attempt ended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import Message

from odradek.client.messages import message_key
from odradek.client.sinks import Sink


class _Skipped:
    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Final = _Skipped()
"""What a sink handler returns for a message it recognised as already applied."""


class IdempotentConsumer:
    """`handler(message, tx)`, skipped for messages already applied in `sink` under `scope`.

    >>> Processor(..., guarantee="at-least-once", sink=sink,          # doctest: +SKIP
    ...           handler=IdempotentConsumer(sink, send_notification))
    """

    def __init__(
        self, sink: Sink, handler: Callable[[Message, Any], Any], *, scope: str = "default"
    ) -> None:
        self.sink = sink
        self.handler = handler
        self.scope = scope
        self.skipped = 0

    def __call__(self, message: Message, tx: Any) -> Any:
        if not self.sink.mark_applied(tx, self.scope, message_key(message)):
            self.skipped += 1
            return SKIPPED
        return self.handler(message, tx)
