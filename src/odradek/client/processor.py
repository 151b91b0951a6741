"""The consume → process → commit loop, ordered per guarantee.

    at-most-once   commit the batch's offsets, then process it: a crash loses, never repeats
    at-least-once  process the batches of a commit interval (`commit_interval`, 100 ms), then
                   flush their outputs (a sink: commit the one database transaction holding
                   the interval's rows) and commit their offsets: a crash repeats (at most the
                   interval), never loses; an `IdempotentConsumer` drops the repeats
    exactly-once   output topic: one Kafka transaction per commit interval (`commit_interval`,
                   100 ms by default as Kafka Streams' commit.interval.ms under exactly-once, or
                   `max_transaction_messages`) holding the output records of every poll batch in
                   it and the consumer offsets (send_offsets_to_transaction); on revocation the
                   open transaction is committed before the partitions are released, and an
                   aborted one rewinds its partitions to their committed positions;
                   sink: one database transaction per batch holding the handler's writes and the
                   offsets, each offset a compare-and-set on the partition's owner token

A handler that raises is retried (`max_attempts`, each attempt in its own savepoint so a failed
attempt leaves no partial write) and then sent to a dead-letter topic; under at-most-once the
offset is already committed, so the message is counted as dropped and dead-lettered at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from odradek.client.guarantee import (
    CommitPoint,
    Config,
    ConfigValue,
    Guarantee,
    IncompatibleSettingsError,
)
from odradek.client.idempotent import SKIPPED
from odradek.client.messages import MESSAGE_ID_HEADER, position
from odradek.client.preflight import PreflightReport, preflight
from odradek.client.sinks import Claim, FencedError, Sink

logger = logging.getLogger("odradek.client")

#: Extra seconds `Processor.run` waits for its first assignment before an idle timeout applies.
JOIN_GRACE_SECONDS = 30.0
# How long closing may take: librdkafka's consumer close waits for its broker (the group
# coordinator, a final unassign) and has no timeout of its own; with the broker gone it can
# block for minutes. After this the Processor gives up on a clean close and returns.
CLOSE_TIMEOUT_SECONDS = 10.0

#: Consumer settings the Processor sets unless `config` overrides them. reconnect.backoff.ms:
#: Kafka's Java client default (50 ms; librdkafka's is 100 ms). librdkafka also spaces its
#: connections for cluster requests (metadata, the coordinator query) by half of it, and a
#: joining consumer waits for one such connection after the bootstrap: ~50 ms of every start
#: at librdkafka's default, ~25 ms at Java's. Reconnects still back off exponentially up to
#: reconnect.backoff.max.ms (10 s).
CONSUMER_DEFAULTS: Config = {"reconnect.backoff.ms": 50}

#: How long the transactional producer waits for a connection to a named broker before
#: `init_transactions` (seconds; see `_reach_a_named_broker`).
NAMED_BROKER_TIMEOUT_SECONDS = 5.0

#: How long `_on_assign` waits for the group's committed offsets before leaving the lookup to
#: librdkafka (seconds).
COMMITTED_TIMEOUT_SECONDS = 10.0

#: Kafka Streams' commit.interval.ms under exactly-once (StreamsConfig), in seconds.
DEFAULT_COMMIT_INTERVAL = 0.1
#: A size bound on one interval transaction, so a fast backlog does not build a huge one.
DEFAULT_MAX_TRANSACTION_MESSAGES = 10_000
#: librdkafka's default transaction.timeout.ms.
LIBRDKAFKA_TRANSACTION_TIMEOUT_MS = 60_000

Batch = Sequence[Message]
Hook = Callable[[Batch], None]
PartitionKey = tuple[str, int]

# librdkafka properties that belong to one client type; anything else goes to both. A
# "consumer." or "producer." prefix routes a property explicitly.
_PRODUCER_ONLY = re.compile(
    r"^(acks|request\.required\.acks|retries|message\.send\.max\.retries|enable\.idempotence|"
    r"transactional\.id|transaction\.timeout\.ms|linger\.ms|queue\.buffering\..*|batch\.(size|"
    r"num\.messages)|compression\.(type|codec)|delivery\.timeout\.ms|message\.timeout\.ms|"
    r"max\.in\.flight.*|partitioner|retry\.backoff.*|sticky\.partitioning\.linger\.ms)$"
)
_CONSUMER_ONLY = re.compile(
    r"^(group\..*|session\.timeout\.ms|heartbeat\.interval\.ms|auto\.offset\.reset|"
    r"enable\.auto\..*|auto\.commit\.interval\.ms|isolation\.level|max\.poll\.interval\.ms|"
    r"partition\.assignment\.strategy|fetch\..*|queued\..*|enable\.partition\.eof|"
    r"check\.crcs|allow\.auto\.create\.topics|client\.rack)$"
)


@dataclass(slots=True)
class RunStats:
    """What one `Processor.run` did."""

    consumed: int = 0  # messages received from Kafka
    processed: int = 0  # handler calls that succeeded (skipped duplicates included)
    duplicates_skipped: int = 0  # messages an IdempotentConsumer recognised as applied
    produced: int = 0  # output records sent
    committed_batches: int = 0
    commit_failures: int = 0  # offset commits refused (the batch will be delivered again)
    retries: int = 0  # handler attempts that raised and were tried again
    dead_lettered: int = 0
    dropped: int = 0  # at-most-once: handler failed after the offset was committed
    aborted_transactions: int = 0
    fenced: int = 0  # commits refused because another processor owns the partition
    elapsed_seconds: float = 0.0
    preflight_findings: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """A record for the output topic (a handler may also return bytes, str or (key, value))."""

    value: bytes | str | None
    key: bytes | str | None = None
    headers: Sequence[tuple[str, bytes | str | None]] = ()
    topic: str | None = None  # default: the processor's output topic
    partition: int | None = None


class Processor:
    """Consume `topics` as `group`, call `handler`, and commit as `guarantee` requires.

    Handlers: with a `sink`, `handler(message, tx)` where `tx` is the sink's open DB-API
    connection; with an `output_topic`, `handler(message)` returns the records to produce
    (None, one value, a (key, value) pair, an `OutputRecord`, or an iterable of them);
    otherwise `handler(message)`.

    Exactly-once into an output topic commits one transaction per `commit_interval` seconds
    (0.1, Kafka Streams' commit.interval.ms under exactly-once; 0 commits every poll batch) or
    `max_transaction_messages` messages, whichever comes first; the producer's
    `transaction.timeout.ms` must exceed the interval (`IncompatibleSettingsError`). The hooks
    then see every message of the transaction. At-least-once commits its Kafka offsets on the
    same schedule (each Kafka commit is a broker round trip that waits for the offsets to be
    durable), and its hooks see every message of the interval. `batch_size` is the poll batch
    (messages; 500, Kafka's max.poll.records).

    `handle_batches=True` calls the handler once per poll batch with the list of messages —
    `handler(messages, tx)` with a sink, `handler(messages)` without — so it can write all rows
    with one `executemany` instead of a statement (and a savepoint) per message. A batch call
    that raises is undone (its savepoint) and the batch is split in halves and tried again,
    down to single messages, which get `max_attempts` and then the dead-letter topic as usual;
    under at-most-once a failed batch call is dropped and dead-lettered whole (a retry would
    repeat the handler's effects, which at-most-once never does). Not with an output topic:
    output records are derived per input message.
    """

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Sequence[str] | str,
        guarantee: Guarantee | str,
        handler: Callable[..., Any],
        sink: Sink | None = None,
        output_topic: str | None = None,
        config: Mapping[str, ConfigValue] | None = None,
        *,
        instance_id: str | None = None,
        batch_size: int = 500,
        handle_batches: bool = False,
        poll_timeout: float = 0.2,
        max_attempts: int = 3,
        dead_letter_topic: str | None = None,
        on_before_commit: Hook | None = None,
        on_after_commit: Hook | None = None,
        run_preflight: bool = True,
        transaction_timeout: float = 30.0,
        commit_interval: float = DEFAULT_COMMIT_INTERVAL,
        max_transaction_messages: int = DEFAULT_MAX_TRANSACTION_MESSAGES,
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.guarantee = Guarantee.parse(guarantee)
        self.handler = handler
        self.sink = sink
        self.output_topic = output_topic
        self.instance_id = instance_id
        self.batch_size = batch_size
        self.handle_batches = handle_batches
        self.poll_timeout = poll_timeout
        self.max_attempts = max(1, max_attempts)
        self.dead_letter_topic = dead_letter_topic or f"{group}.dead-letter"
        self.on_before_commit = on_before_commit
        self.on_after_commit = on_after_commit
        self.run_preflight = run_preflight
        self.transaction_timeout = transaction_timeout
        self.commit_interval = max(0.0, commit_interval)
        self.max_transaction_messages = max(1, max_transaction_messages)
        self.preflight_report: PreflightReport | None = None
        self.transactional_id: str | None = None
        self._consumer_overrides, self._producer_overrides = _split_config(config or {})
        self._validate()
        self._stop = threading.Event()
        self._last_activity = time.monotonic()
        self._assigned = False
        self._owner_tokens: dict[PartitionKey, int] = {}
        self._consumer: Any = None
        self._producer: Any = None  # output (transactional under exactly-once)
        self._dead_letter_producer: Any = None
        self._instance_lock: IO[str] | None = None
        self._stats = RunStats()
        self._transaction: _OpenTransaction | None = None
        self._uncommitted: _Uncommitted | None = None

    # -- configuration -----------------------------------------------------------------------
    def _validate(self) -> None:
        if not self.topics:
            raise IncompatibleSettingsError("a Processor needs at least one input topic")
        if self.sink is not None and self.output_topic is not None:
            raise IncompatibleSettingsError(
                "choose a sink or an output topic, not both: a database and Kafka cannot commit "
                "in one transaction"
            )
        if self.guarantee is Guarantee.EXACTLY_ONCE and self.sink is None and not self.output_topic:
            raise IncompatibleSettingsError(
                "exactly-once needs an output topic (a Kafka transaction) or a sink (a database "
                "transaction): a handler's other side effects cannot be made atomic with the "
                "offset commit"
            )
        if (
            self.sink is not None
            and self.guarantee is Guarantee.AT_LEAST_ONCE
            and not self.sink.commits_survive_power_loss
        ):
            raise IncompatibleSettingsError(
                f"{self.sink!r} acknowledges commits that a power loss can undo, and "
                "at-least-once commits its offsets to Kafka after the database commit: rows "
                "could be lost behind committed offsets (use synchronous=FULL)"
            )
        if self.handle_batches and self.output_topic is not None:
            raise IncompatibleSettingsError(
                "handle_batches with an output topic: output records are produced per input "
                "message (their message ids derive from its position); use a per-message handler"
            )
        if self.output_topic is not None and self.output_topic in self.topics:
            raise IncompatibleSettingsError(
                f"output topic {self.output_topic!r} is also an input topic"
            )
        consumer, producer = self._consumer_overrides, self._producer_overrides
        if _truthy(consumer.get("enable.auto.commit", False)):
            raise IncompatibleSettingsError(
                "enable.auto.commit=true: the Processor commits offsets itself, at the point "
                f"{self.guarantee.value} requires ({self.guarantee.commit_point.value})"
            )
        if self.guarantee is Guarantee.AT_MOST_ONCE:
            return
        acks = str(producer.get("acks", producer.get("request.required.acks", "all")))
        if acks == "0" or (self.guarantee is Guarantee.EXACTLY_ONCE and acks not in ("all", "-1")):
            raise IncompatibleSettingsError(
                f"acks={acks} cannot give {self.guarantee.value}: an unacknowledged (or "
                "leader-only) write can be lost"
            )
        if self.guarantee is Guarantee.EXACTLY_ONCE:
            if str(consumer.get("isolation.level", "read_committed")) != "read_committed":
                raise IncompatibleSettingsError(
                    "exactly-once reads with isolation.level=read_committed: read_uncommitted "
                    "would process records of aborted transactions"
                )
            if not _truthy(producer.get("enable.idempotence", True)):
                raise IncompatibleSettingsError(
                    "exactly-once needs enable.idempotence=true (transactions require it)"
                )
            timeout_ms = int(
                producer.get("transaction.timeout.ms", LIBRDKAFKA_TRANSACTION_TIMEOUT_MS)
            )
            if self.output_topic is not None and timeout_ms <= self.commit_interval * 1000:
                raise IncompatibleSettingsError(
                    f"transaction.timeout.ms={timeout_ms} is not larger than the commit interval "
                    f"({self.commit_interval * 1000:.0f} ms): the coordinator would abort every "
                    "transaction before the processor commits it"
                )

    def consumer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            **CONSUMER_DEFAULTS,
            **self.guarantee.consumer_config(),
            **self._consumer_overrides,
        }

    def producer_config(self, transactional_id: str | None = None) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            **self.guarantee.producer_config(transactional_id),
            **self._producer_overrides,
        }

    @property
    def _incremental(self) -> bool:
        consumer = self._consumer_overrides
        return str(consumer.get("group.protocol", "classic")) == "consumer" or "cooperative" in str(
            consumer.get("partition.assignment.strategy", "")
        )

    @property
    def _offsets_in_sink(self) -> bool:
        return self.sink is not None and self.guarantee is Guarantee.EXACTLY_ONCE

    @property
    def _kafka_transactions(self) -> bool:
        return self.output_topic is not None and self.guarantee is Guarantee.EXACTLY_ONCE

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask `run` to return after the batch in hand (safe from another thread or a signal)."""
        self._stop.set()

    def run(self, idle_timeout: float | None = None) -> RunStats:
        """Process until `stop()`, or until no message arrived for `idle_timeout` seconds.

        The idle clock starts with the first assignment: joining the group (which on a loaded
        machine, or next to a dead member's session, can take longer than the idle timeout) is
        not idleness. Without any assignment the loop gives up after `idle_timeout` plus
        `JOIN_GRACE_SECONDS`.
        """
        self._stats = stats = RunStats()
        started = time.monotonic()
        self._preflight()
        stats.preflight_findings = self.preflight_report.messages if self.preflight_report else ()
        try:
            self._start()
            self._assigned = False
            self._last_activity = time.monotonic()
            while not self._stop.is_set():
                batch = self._poll()
                if self._transaction is not None and self._transaction_due():
                    # The poll timeout ends with the interval: an idle input still commits.
                    self._commit_transaction()
                if self._uncommitted is not None and self._uncommitted_due():
                    self._commit_uncommitted()
                if not batch:
                    idle = time.monotonic() - self._last_activity
                    limit = idle_timeout
                    if limit is not None and not self._assigned:
                        limit += JOIN_GRACE_SECONDS
                    if limit is not None and idle >= limit:
                        if self._uncommitted is not None:
                            self._commit_uncommitted()
                        if self._transaction is not None and not self._commit_transaction():
                            # Aborted and rewound: there is work again.
                            self._last_activity = time.monotonic()
                            continue
                        break
                    continue
                self._last_activity = time.monotonic()
                stats.consumed += len(batch)
                self._process_batch(batch)
                if self._transaction is not None and self._transaction_due():
                    self._commit_transaction()
                if self._uncommitted is not None and self._uncommitted_due():
                    self._commit_uncommitted()
            if self._transaction is not None:
                self._commit_transaction()
            if self._uncommitted is not None:
                self._commit_uncommitted()
        except BaseException:
            # Never let the consumer's close (whose revocation commits) commit a transaction
            # that an error interrupted.
            if self._transaction is not None:
                self._abort_transaction(None)
            self._drop_uncommitted()
            raise
        finally:
            self._close()
            stats.elapsed_seconds = time.monotonic() - started
        return stats

    def _preflight(self) -> None:
        if not self.run_preflight or self.preflight_report is not None:
            return
        try:
            report = preflight(self.bootstrap, self.topics, self.guarantee)
        except KafkaException as error:
            logger.warning("preflight could not read the cluster's configs: %s", error)
            return
        self.preflight_report = report
        for finding in report.findings:
            logger.warning("preflight (%s): %s", self.guarantee.value, finding)

    def _start(self) -> None:
        if self.sink is not None:
            self.sink.open()
        if self._kafka_transactions:
            configured = self._producer_overrides.get("transactional.id")
            self.transactional_id = (
                str(configured) if configured else self._derive_transactional_id()
            )
            self._producer = Producer(self.producer_config(self.transactional_id))
            _reach_a_named_broker(self._producer, str(self.output_topic))
            self._producer.init_transactions(self.transaction_timeout)
        elif self.output_topic is not None:
            self._producer = Producer(self.producer_config())
        self._consumer = Consumer(self.consumer_config())
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _close(self) -> None:
        """Close the clients within about `CLOSE_TIMEOUT_SECONDS` each, even with the broker
        gone: the consumer's close in a helper thread that is left behind if it blocks, the
        producers' flush bounded (what they still hold is lost, as in a crash)."""
        if self._consumer is not None:
            _close_consumer(self._consumer, CLOSE_TIMEOUT_SECONDS)
            self._consumer = None
        for producer in (self._producer, self._dead_letter_producer):
            if producer is not None and producer.flush(CLOSE_TIMEOUT_SECONDS) > 0:
                logger.warning("closing with records not acknowledged within the close timeout")
        self._producer = self._dead_letter_producer = None
        if self.sink is not None:
            self.sink.close()
        if self._instance_lock is not None:
            self._instance_lock.close()
            self._instance_lock = None

    def _derive_transactional_id(self) -> str:
        """One transactional.id per instance, the same after a restart.

        An explicit `instance_id` names the instance. Otherwise the instance takes the lowest free
        slot on this host, held with an flock that dies with the process: a restarted processor
        gets its predecessor's slot, so its InitProducerId fences the predecessor's producer and
        aborts the transaction it left open, instead of waiting for the transaction timeout.
        """
        base = f"odradek-{self.group}"
        if self.instance_id is not None:
            return f"{base}-{self.instance_id}"
        directory = Path(
            os.environ.get("ODRADEK_STATE_DIR") or Path(tempfile.gettempdir()) / "odradek"
        )
        directory.mkdir(parents=True, exist_ok=True)
        safe_group = re.sub(r"[^A-Za-z0-9._-]", "_", self.group)
        host = socket.gethostname()
        for slot in range(4096):
            handle = (directory / f"{safe_group}.{slot}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._instance_lock = handle
            self.instance_id = f"{host}-{slot}"
            return f"{base}-{self.instance_id}"
        raise RuntimeError(f"no free processor slot for group {self.group!r} in {directory}")

    # -- rebalancing ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A rebalance is activity: the idle timeout counts from when there is work to fetch,
        # not from a join that waited for a dead member's session to expire.
        self._assigned = True
        self._last_activity = time.monotonic()
        if self._offsets_in_sink and partitions:
            partitions = self._claim(partitions)
        elif partitions:
            partitions = self._start_positions(consumer, partitions)
        logger.info(
            "assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "-"
        )
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def _start_positions(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> list[TopicPartition]:
        """Each partition at its committed offset, or where `auto.offset.reset` says if the
        group has none: what librdkafka would look up itself, minus a wait.

        Left to itself, librdkafka fetches the committed offsets after `assign` too (the same
        OffsetFetch, with `require_stable` under read_committed), but for a partition with
        none it starts the offset-reset ListOffsets behind a fixed 100 ms backoff
        (`rd_kafka_offset_reset` treats "no committed offset" as an error), so every new
        group waited 0.1 s before its first fetch. A partition whose answer is an error, or
        a timeout, is left to librdkafka's own lookup.
        """
        reset = str(self.consumer_config().get("auto.offset.reset", "largest")).lower()
        if reset in ("smallest", "earliest", "beginning"):
            start = OFFSET_BEGINNING
        elif reset in ("largest", "latest", "end"):
            start = OFFSET_END
        else:  # "error": librdkafka reports the missing offset itself
            return partitions
        unset = [tp for tp in partitions if tp.offset == OFFSET_INVALID]
        if not unset:
            return partitions
        try:
            committed = consumer.committed(unset, timeout=COMMITTED_TIMEOUT_SECONDS)
        except KafkaException as error:
            logger.info("committed offsets not read (%s): librdkafka will look them up", error)
            return partitions
        found: dict[PartitionKey, TopicPartition] = {}
        for tp in committed:
            if tp.error is not None:
                continue
            if tp.offset == OFFSET_INVALID:
                found[(tp.topic, tp.partition)] = TopicPartition(tp.topic, tp.partition, start)
            elif tp.offset >= 0:
                found[(tp.topic, tp.partition)] = tp  # with its leader epoch (KIP-320)
        return [found.get((tp.topic, tp.partition), tp) for tp in partitions]

    def _claim(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Take ownership in the sink and start each partition at its stored offset."""
        assert self.sink is not None
        reset = str(self.consumer_config().get("auto.offset.reset", "earliest"))
        start = OFFSET_END if reset in ("latest", "largest", "end") else OFFSET_BEGINNING
        with self.sink.transaction() as tx:
            claims: list[Claim] = [
                self.sink.claim(tx, self.group, tp.topic, tp.partition) for tp in partitions
            ]
        positioned = []
        for claim in claims:
            self._owner_tokens[(claim.topic, claim.partition)] = claim.owner_token
            offset = start if claim.next_offset is None else claim.next_offset
            positioned.append(TopicPartition(claim.topic, claim.partition, offset))
        return positioned

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit the open transaction while its partitions are still ours: its offsets then
        # reach the group before the next owner reads them (Kafka Streams commits its tasks
        # on revocation; with one producer per instance, that is the whole transaction).
        if self._transaction is not None and partitions:
            self._commit_transaction()
        if self._uncommitted is not None and partitions:
            self._commit_uncommitted()
        self._release(consumer, partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.warning("partitions lost: %s", partitions)
        # Lost, not revoked: the group has moved on, so an offset commit would be refused and
        # the output must not become visible.
        if self._transaction is not None and partitions:
            self._abort_transaction(None)
        if self._uncommitted is not None and partitions:
            # The group moved on: an offset commit would be refused. The sink's rows stay (the
            # next owner processes their messages again: at-least-once).
            self._commit_uncommitted(offsets=False)
        self._release(consumer, partitions)

    def _release(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        if self._incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def _forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._owner_tokens.pop((tp.topic, tp.partition), None)

    # -- the loop ------------------------------------------------------------------------------
    def _poll_timeout(self) -> float:
        """The poll timeout (seconds), cut short where an open transaction's interval ends."""
        interval = self._transaction or self._uncommitted
        if interval is None:
            return self.poll_timeout
        remaining = interval.started + self.commit_interval - time.monotonic()
        return max(0.0, min(self.poll_timeout, remaining))

    def _poll(self) -> list[Message]:
        messages = self._consumer.consume(
            num_messages=self.batch_size, timeout=self._poll_timeout()
        )
        batch = []
        for message in messages:
            error = message.error()
            if error is None:
                batch.append(message)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                logger.warning("consumer error: %s", error)
        return batch

    def _process_batch(self, batch: Batch) -> None:
        if self._offsets_in_sink:
            self._exactly_once_into_sink(batch)
        elif self._kafka_transactions:
            self._exactly_once_into_topic(batch)
        elif self.guarantee.commit_point is CommitPoint.BEFORE_PROCESSING:
            self._at_most_once(batch)
        else:
            self._at_least_once(batch)

    def _at_most_once(self, batch: Batch) -> None:
        if not self._commit_to_kafka(batch):
            # Not committed: leave the batch to whoever owns the partition next, unprocessed.
            self._rewind(batch)
            return
        self._hook(self.on_after_commit, batch)
        self._handle_all(batch)
        if self._producer is not None:
            self._producer.poll(0)

    def _at_least_once(self, batch: Batch) -> None:
        """Process the batch, then, when the commit interval is due (`run`), commit the
        interval's offsets. A sink's writes of the interval share one database transaction,
        committed before the offsets."""
        if self._uncommitted is None:
            uncommitted = _Uncommitted(time.monotonic())
            if self.sink is not None:
                # The sink's own `transaction()` (a subclass may wrap it), kept open until the
                # interval commits.
                uncommitted.tx = uncommitted.sink_transaction.enter_context(self.sink.transaction())
            self._uncommitted = uncommitted
        uncommitted = self._uncommitted
        if uncommitted.tx is not None:
            dead = self._handle_in_sink(batch, uncommitted.tx)
            self._dead_letter(dead, flush=True)
        else:
            self._handle_all(batch)
        uncommitted.add(batch)

    def _uncommitted_due(self) -> bool:
        uncommitted = self._uncommitted
        assert uncommitted is not None
        return (
            len(uncommitted.messages) >= self.max_transaction_messages
            or time.monotonic() - uncommitted.started >= self.commit_interval
        )

    def _commit_uncommitted(self, *, offsets: bool = True) -> None:
        """At-least-once: flush the outputs (commit the sink's transaction), then commit the
        interval's offsets to Kafka (unless `offsets` is False: the partitions were lost)."""
        uncommitted, self._uncommitted = self._uncommitted, None
        assert uncommitted is not None
        self._flush_outputs()
        uncommitted.sink_transaction.close()  # commits the sink's transaction, if one is open
        if not offsets:
            return
        self._hook(self.on_before_commit, uncommitted.messages)
        if self._commit_to_kafka(uncommitted.messages):
            self._hook(self.on_after_commit, uncommitted.messages)

    def _drop_uncommitted(self) -> None:
        """An error interrupted the interval: its sink writes roll back, nothing is committed
        (the next owner gets its messages again: at-least-once)."""
        uncommitted, self._uncommitted = self._uncommitted, None
        if uncommitted is not None:
            interrupted = RuntimeError("the commit interval was interrupted")
            with contextlib.suppress(Exception):
                uncommitted.sink_transaction.__exit__(
                    type(interrupted), interrupted, interrupted.__traceback__
                )

    def _exactly_once_into_sink(self, batch: Batch) -> None:
        assert self.sink is not None
        next_offsets = _next_offsets(batch)
        try:
            with self.sink.transaction() as tx:
                dead = self._handle_in_sink(batch, tx)
                self._dead_letter(dead, flush=True)
                self._hook(self.on_before_commit, batch)
                for (topic, partition), next_offset in next_offsets.items():
                    token = self._owner_tokens.get((topic, partition))
                    if token is None:
                        raise FencedError(self.group, topic, partition, -1)
                    self.sink.store_offset(tx, self.group, topic, partition, next_offset, token)
        except FencedError as fenced:
            self._stats.fenced += 1
            logger.warning("%s", fenced)
            # The batch was rolled back. Stop fetching what we no longer own; the rebalance
            # that took it away will tell librdkafka too.
            lost = [TopicPartition(t, p) for t, p in next_offsets]
            self._forget(lost)
            with contextlib.suppress(KafkaException):
                self._consumer.pause(lost)
            return
        self._stats.committed_batches += 1
        self._hook(self.on_after_commit, batch)
        # For lag monitoring only: the database holds the offsets that count.
        with contextlib.suppress(KafkaException):
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in next_offsets.items()],
                asynchronous=True,
            )

    def _exactly_once_into_topic(self, batch: Batch) -> None:
        """Add a poll batch to the open transaction (beginning one if none is open).

        The transaction commits when its interval or size bound is reached (`run`), on
        revocation, or when the processor stops.
        """
        producer = self._producer
        if self._transaction is None:
            producer.begin_transaction()
            self._transaction = _OpenTransaction(time.monotonic())
        self._transaction.add(batch)
        try:
            dead = []
            for message in batch:
                records = self._call_with_retries(message, self._materialized_handler)
                if records is _FAILED:
                    dead.append((message, self._last_error))
                    continue
                self._produce_records(producer, message, records, materialized=True)
            for message, error in dead:
                self._produce_dead_letter(producer, message, error)
        except KafkaException as exception:
            self._abort_transaction(exception)

    def _materialized_handler(self, message: Message) -> list[OutputRecord]:
        # All of a handler's records, before any is produced: a generator that fails halfway
        # is retried (or dead-lettered) without leaving its first records in the transaction.
        return _records(self.handler(message))

    def _transaction_due(self) -> bool:
        transaction = self._transaction
        assert transaction is not None
        return (
            len(transaction.messages) >= self.max_transaction_messages
            or time.monotonic() - transaction.started >= self.commit_interval
        )

    def _commit_transaction(self) -> bool:
        """Commit the open transaction with its consumer offsets; abort it if Kafka refuses."""
        transaction = self._transaction
        assert transaction is not None
        producer = self._producer
        try:
            self._hook(self.on_before_commit, transaction.messages)
            producer.send_offsets_to_transaction(
                transaction.offsets(),
                self._consumer.consumer_group_metadata(),
                self.transaction_timeout,
            )
            producer.commit_transaction(self.transaction_timeout)
        except KafkaException as exception:
            self._abort_transaction(exception)
            return False
        except BaseException:
            self._abort_transaction(None)
            raise
        self._transaction = None
        self._stats.committed_batches += 1
        self._hook(self.on_after_commit, transaction.messages)
        return True

    def _abort_transaction(self, exception: KafkaException | None) -> None:
        """Abort the open transaction and rewind each of its partitions to its committed position.

        Every poll batch of the transaction is consumed again (Kafka Streams' handling of a
        corrupted task under exactly-once): rewinding only the last batch would lose the
        earlier ones, whose output the abort discarded. A fatal error (the producer was
        fenced) is raised.
        """
        transaction, self._transaction = self._transaction, None
        error = exception.args[0] if exception is not None else None
        if exception is not None and isinstance(error, KafkaError) and error.fatal():
            raise exception
        logger.warning(
            "transaction aborted, its %d messages will be processed again: %s",
            len(transaction.messages) if transaction else 0,
            error if exception is not None else "interrupted",
        )
        with contextlib.suppress(KafkaException):
            self._producer.abort_transaction(self.transaction_timeout)
        self._stats.aborted_transactions += 1
        if transaction is not None:
            for (topic, partition), offset in transaction.first_offsets.items():
                # A partition no longer assigned is refused: its next owner starts from the
                # committed offset anyway.
                with contextlib.suppress(KafkaException):
                    self._consumer.seek(TopicPartition(topic, partition, offset))

    # -- handler calls -------------------------------------------------------------------------
    _last_error: BaseException | None = None

    def _call_with_retries(
        self,
        message: Message,
        call: Callable[[Message], Any],
        first_error: Exception | None = None,
    ) -> Any:
        """`call(message)` up to `max_attempts` times (once under at-most-once): its result, or
        `_FAILED` with the last error in `_last_error`. `first_error`: the caller made the
        first attempt, and it raised that."""
        attempts = self.max_attempts if self.guarantee is not Guarantee.AT_MOST_ONCE else 1
        for attempt in range(1, attempts + 1):
            if first_error is not None:
                error, first_error = first_error, None
            else:
                try:
                    result = call(message)
                except Exception as raised:
                    error = raised
                else:
                    self._stats.processed += 1
                    if result is SKIPPED:
                        self._stats.duplicates_skipped += 1
                    return result
            self._last_error = error
            logger.warning(
                "handler failed on %s[%d]@%d (attempt %d of %d): %r",
                message.topic(),
                message.partition(),
                message.offset(),
                attempt,
                attempts,
                error,
            )
            if attempt < attempts:
                self._stats.retries += 1
        return _FAILED

    def _call_batches_with_retries(
        self, batch: Batch, call: Callable[[Batch], Any]
    ) -> list[tuple[Message, BaseException | None]]:
        """`call(messages)` over the batch; a failing part is split in halves (see the class).

        Returns the messages that failed alone `max_attempts` times (or, under at-most-once,
        every message of a failed call), with their last error.
        """
        dead: list[tuple[Message, BaseException | None]] = []
        pending: list[Batch] = [batch]  # a stack: the first half is tried first, order is kept
        while pending:
            part = pending.pop()
            if len(part) == 1 and self.guarantee is not Guarantee.AT_MOST_ONCE:
                single = part[0]
                if self._call_with_retries(single, lambda message: call([message])) is _FAILED:
                    dead.append((single, self._last_error))
                continue
            try:
                call(part)
            except Exception as error:
                first = part[0]
                logger.warning(
                    "handler failed on a batch of %d from %s[%d]@%d: %r",
                    len(part),
                    first.topic(),
                    first.partition(),
                    first.offset(),
                    error,
                )
                if self.guarantee is Guarantee.AT_MOST_ONCE:
                    dead.extend((message, error) for message in part)
                    continue
                self._stats.retries += 1
                middle = len(part) // 2
                pending.append(part[middle:])
                pending.append(part[:middle])
                continue
            self._stats.processed += len(part)
        return dead

    def _handle_all(self, batch: Batch) -> None:
        """Run the handler over a batch (at-most-once / at-least-once)."""
        if self.sink is not None:
            with self.sink.transaction() as tx:
                dead = self._handle_in_sink(batch, tx)
        elif self.handle_batches:
            dead = self._call_batches_with_retries(batch, self.handler)
        else:
            dead = []
            for message in batch:
                result = self._call_with_retries(message, self.handler)
                if result is _FAILED:
                    dead.append((message, self._last_error))
                elif self.output_topic is not None and self._producer is not None:
                    self._produce_records(self._producer, message, result)
        if dead and self.guarantee is Guarantee.AT_MOST_ONCE:
            self._stats.dropped += len(dead)
        self._dead_letter(dead, flush=self.guarantee is not Guarantee.AT_MOST_ONCE)

    def _handle_in_sink(self, batch: Batch, tx: Any) -> list[tuple[Message, BaseException | None]]:
        assert self.sink is not None
        sink = self.sink
        if self.handle_batches:

            def attempt_batch(messages: Batch) -> Any:
                return sink.call_in_savepoint(tx, self.handler, messages, tx)

            return self._call_batches_with_retries(batch, attempt_batch)

        handler = self.handler
        call_in_savepoint = sink.call_in_savepoint

        def attempt(message: Message) -> Any:
            return call_in_savepoint(tx, handler, message, tx)

        # The first attempt inline (the per-message cost of the common case is the handler and
        # its savepoint); a failure continues in `_call_with_retries` from the second attempt.
        dead = []
        processed = skipped = 0
        for message in batch:
            try:
                result = call_in_savepoint(tx, handler, message, tx)
            except Exception as error:
                if self._call_with_retries(message, attempt, error) is _FAILED:
                    dead.append((message, self._last_error))
                continue
            processed += 1
            if result is SKIPPED:
                skipped += 1
        self._stats.processed += processed
        self._stats.duplicates_skipped += skipped
        return dead

    def _produce_records(
        self, producer: Any, source: Message, records: Any, *, materialized: bool = False
    ) -> None:
        """Produce a handler's result (`materialized`: already `_records(result)`)."""
        if not materialized:
            records = _records(records)
        output_topic = str(self.output_topic)
        for index, record in enumerate(records):
            headers = list(record.headers)
            if not headers or not any(name == MESSAGE_ID_HEADER for name, _ in headers):
                # Derived from the input's position: processing it again yields the same ids,
                # so a downstream idempotent consumer drops at-least-once repeats.
                identity = f"{source.topic()}:{source.partition()}:{source.offset()}:{index}"
                headers.append((MESSAGE_ID_HEADER, identity.encode()))
            topic = record.topic or output_topic
            partition = record.partition
            while True:
                try:
                    if partition is None:
                        producer.produce(topic, record.value, record.key, headers=headers)
                    else:
                        producer.produce(
                            topic, record.value, record.key, partition=partition, headers=headers
                        )
                    break
                except BufferError:
                    producer.poll(0.1)
        self._stats.produced += len(records)

    # -- dead letters ----------------------------------------------------------------------------
    def _dead_letter(
        self, dead: Sequence[tuple[Message, BaseException | None]], *, flush: bool
    ) -> None:
        if not dead:
            return
        if self._dead_letter_producer is None:
            self._dead_letter_producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    **Guarantee.AT_LEAST_ONCE.producer_config(),
                    **{
                        k: v
                        for k, v in self._producer_overrides.items()
                        if k not in ("acks", "transactional.id", "enable.idempotence")
                    },
                }
            )
        for message, error in dead:
            self._produce_dead_letter(self._dead_letter_producer, message, error)
        if flush and self._dead_letter_producer.flush(30) > 0:
            raise RuntimeError("dead-letter records were not acknowledged within 30 s")

    def _produce_dead_letter(
        self, producer: Any, message: Message, error: BaseException | None
    ) -> None:
        topic, partition, offset = position(message)
        headers: list[Any] = list(message.headers() or [])
        headers += [
            ("odradek-error", repr(error).encode()),
            ("odradek-source-topic", topic.encode()),
            ("odradek-source-partition", str(partition).encode()),
            ("odradek-source-offset", str(offset).encode()),
            ("odradek-guarantee", self.guarantee.value.encode()),
        ]
        arguments = {"value": message.value(), "key": message.key(), "headers": headers}
        _produce(producer, self.dead_letter_topic, arguments)
        self._stats.dead_lettered += 1

    # -- commits ---------------------------------------------------------------------------------
    def _flush_outputs(self) -> None:
        if self._producer is not None and self._producer.flush(30) > 0:
            raise RuntimeError("output records were not acknowledged within 30 s")

    def _commit_to_kafka(self, batch: Batch) -> bool:
        return self._commit_offsets(_topic_partitions(batch))

    def _commit_offsets(self, offsets: list[TopicPartition]) -> bool:
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as error:
            self._stats.commit_failures += 1
            logger.warning("offset commit failed: %s", error.args[0])
            return False
        if any(tp.error is not None for tp in results or []):
            self._stats.commit_failures += 1
            logger.warning("offset commit failed: %s", [tp.error for tp in results if tp.error])
            return False
        self._stats.committed_batches += 1
        return True

    def _rewind(self, batch: Batch) -> None:
        """Fetch the batch again (if the partitions are still ours)."""
        first: dict[PartitionKey, int] = {}
        for message in batch:
            topic, partition, offset = position(message)
            first[(topic, partition)] = min(first.get((topic, partition), offset), offset)
        for (topic, partition), offset in first.items():
            with contextlib.suppress(KafkaException):
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def _hook(self, hook: Hook | None, batch: Batch) -> None:
        if hook is not None:
            hook(batch)


_FAILED = object()


def _reach_a_named_broker(client: Any, topic: str) -> None:
    """Return once `client` has a connection to a broker named in the cluster's metadata (or
    after `NAMED_BROKER_TIMEOUT_SECONDS`).

    librdkafka retires its bootstrap connection once metadata names the brokers, and connects
    to a named one after a short spacing (half of reconnect.backoff.ms). `init_transactions`
    called in that gap finds no broker to ask for its coordinator and retries on a fixed
    500 ms timer: a third of exactly-once starts took 0.5 s longer. A metadata request
    answered by a named broker (`orig_broker_id` >= 0; the bootstrap answers as -1) closes
    the gap. Errors are left to `init_transactions`, which reports them.
    """
    deadline = time.monotonic() + NAMED_BROKER_TIMEOUT_SECONDS
    for _ in range(3):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            metadata = client.list_topics(topic, timeout=remaining)
        except KafkaException:
            return
        if metadata.orig_broker_id >= 0:
            return


def _close_consumer(consumer: Any, timeout: float) -> None:
    """`consumer.close()`, waiting at most `timeout` seconds for it (a daemon thread runs it)."""

    def close() -> None:
        with contextlib.suppress(KafkaException, RuntimeError):
            consumer.close()

    closer = threading.Thread(target=close, name="odradek-processor-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        logger.warning("the consumer did not close within %.0f s; leaving it", timeout)


@dataclass(slots=True)
class _OpenTransaction:
    """The poll batches in the open Kafka transaction (exactly-once into an output topic).

    `first_offsets` is where each partition stood when the transaction first read it — its
    committed position, where an abort rewinds to; `next_offsets` what the commit stores.
    """

    started: float  # time.monotonic() at begin_transaction
    messages: list[Message] = field(default_factory=list)
    first_offsets: dict[PartitionKey, int] = field(default_factory=dict)
    next_offsets: dict[PartitionKey, int] = field(default_factory=dict)

    def add(self, batch: Batch) -> None:
        self.messages.extend(batch)
        first_offsets = self.first_offsets
        for message in batch:
            key = (message.topic(), message.partition())
            if key not in first_offsets:
                first_offsets[key] = message.offset()  # type: ignore[index,assignment]
        self.next_offsets.update(_next_offsets(batch))

    def offsets(self) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for (t, p), o in self.next_offsets.items()]


@dataclass(slots=True)
class _Uncommitted:
    """At-least-once: the poll batches processed in the open commit interval (outputs sent, rows
    written in the sink's open transaction) whose offsets are not committed to Kafka yet."""

    started: float  # time.monotonic() of the first batch
    tx: Any = None  # the sink's open transaction (its connection), holding the interval's rows
    sink_transaction: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    messages: list[Message] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        self.messages.extend(batch)


def _next_offsets(batch: Batch) -> dict[PartitionKey, int]:
    """Per partition, the offset after the batch's last message of it.

    librdkafka delivers each partition's messages in offset order (a batch, and the batches of
    one interval, never go back within a partition), so the last message of a partition is its
    highest: one dict store per message and no per-message `max`.
    """
    if not batch:
        return {}
    first, final = batch[0], batch[-1]
    topic, partition = final.topic(), final.partition()
    if (
        first.partition() == partition
        and first.topic() == topic
        and final.offset() - first.offset() == len(batch) - 1  # type: ignore[operator]
    ):
        # One partition's messages have distinct, increasing offsets, so only a batch of that
        # partition alone can span exactly len(batch) consecutive offsets: no loop needed.
        return {(topic, partition): final.offset() + 1}  # type: ignore[dict-item,operator]
    last: dict[PartitionKey, int] = {}
    for message in batch:
        last[(message.topic(), message.partition())] = message.offset()  # type: ignore[index,assignment]
    return {key: offset + 1 for key, offset in last.items()}


def _topic_partitions(batch: Batch) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for (t, p), o in _next_offsets(batch).items()]


def _records(result: Any) -> list[OutputRecord]:
    """A handler's result as a list of records (all of them, before any is produced)."""
    if result is None or result is SKIPPED:
        return []
    if isinstance(result, bytes | str):
        return [OutputRecord(result)]
    if isinstance(result, OutputRecord):
        return [result]
    if isinstance(result, tuple) and len(result) == 2:
        return [OutputRecord(result[1], key=result[0])]
    return [record for item in result for record in _records(item)]


def _produce(producer: Any, topic: str, arguments: dict[str, Any]) -> None:
    while True:
        try:
            producer.produce(topic, **arguments)
            return
        except BufferError:
            producer.poll(0.1)


def _split_config(config: Mapping[str, ConfigValue]) -> tuple[Config, Config]:
    consumer: Config = {}
    producer: Config = {}
    for name, value in config.items():
        if name.startswith("consumer."):
            consumer[name.removeprefix("consumer.")] = value
        elif name.startswith("producer."):
            producer[name.removeprefix("producer.")] = value
        elif _PRODUCER_ONLY.match(name):
            producer[name] = value
        elif _CONSUMER_ONLY.match(name):
            consumer[name] = value
        else:
            consumer[name] = producer[name] = value
    return consumer, producer


def _truthy(value: ConfigValue) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")
