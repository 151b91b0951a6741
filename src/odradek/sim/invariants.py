"""The invariants a run must keep, checked as the clients act and over the final logs.

The clients report what they did and saw (`Checker.acknowledged`, `Checker.read`, ...); each
report is checked at once against what is known so far, and `Checker.final` checks the broker's
logs at the end of the run. The first broken invariant ends the run with a `Violation`.

Values name their origin: `i<producer>-<n>` from an idempotent producer, `t<txn>-<n>` from
the transactional producer's transaction `<txn>`, `a<producer>-<n>` from an acks=1 producer
(not idempotent: its writes may be lost, and a retried one may be in the log twice).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from odradek.protocol.record_batch import decode_batches
from odradek.storage.log import PartitionLog


class InvariantBrokenError(Exception):
    """Raised inside the run to end it at the first broken invariant."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    detail: str
    at_s: float

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail} (at {self.at_s:.6f} s)"


class TxnState(enum.Enum):
    OPEN = "open"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ABORTING = "aborting"
    ABORTED = "aborted"
    # The producer failed or was fenced mid-transaction: must end aborted, unless a commit
    # had been asked for (then either outcome is allowed).
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Txn:
    number: int
    state: TxnState = TxnState.OPEN
    commit_requested: bool = False
    # value -> partition, for every record the producer sent in it
    sent: dict[str, int] = field(default_factory=dict)
    acked: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(slots=True)
class LoggedRecord:
    partition: int
    offset: int
    value: str
    producer_id: int
    transactional: bool
    # COMMIT / ABORT / None (still open at the end of the log)
    outcome: bool | None = None


class Checker:
    """Every invariant of the issue, over one run's history."""

    def __init__(
        self,
        clock: Callable[[], float],
        topic: str,
        partitions: int,
        on_violation: Callable[[Violation], None] | None = None,
    ) -> None:
        self.clock = clock
        self.on_violation = on_violation
        self.topic = topic
        self.partitions = partitions
        self.acked: dict[str, tuple[int, int]] = {}
        # partition -> the largest offset of an acknowledged acks=all write
        self.max_acked: dict[int, int] = {}
        # acks=1 writes the leader alone acknowledged: may be lost (not checked at the end).
        self.leader_acked: dict[str, tuple[int, int]] = {}
        self.txns: dict[int, Txn] = {}
        self.read_at: dict[tuple[int, int], str] = {}
        self.sessions: dict[tuple[str, int, int], int] = {}
        self.owners: dict[tuple[int, int, int], str] = {}
        self.producer_owner: dict[int, str] = {}
        self.transactional_ids: dict[str, tuple[int, int]] = {}
        self.txn_offsets_seen = -1
        self.power_losses = 0
        self.unsynced_power_loss = False
        self.violations: list[Violation] = []
        self.reads = 0
        # value -> (partition, offset) of every transactional record a read_committed
        # consumer returned (TransactionChecks.read_committed_outcomes)
        self.read_committed_txn: dict[str, tuple[int, int]] = {}

    def fail(self, invariant: str, detail: str) -> None:
        violation = Violation(invariant, detail, self.clock())
        self.violations.append(violation)
        if self.on_violation is not None:
            self.on_violation(violation)
        raise InvariantBrokenError(violation)

    # -- producers ---------------------------------------------------------------------------

    def acknowledged(self, value: str, partition: int, offset: int) -> None:
        """An acks=all write the broker acknowledged at (partition, offset)."""
        self.acked[value] = (partition, offset)
        if offset > self.max_acked.get(partition, -1):
            self.max_acked[partition] = offset

    def leader_acknowledged(self, value: str, partition: int, offset: int) -> None:
        """An acks=1 write the leader acknowledged at (partition, offset): no promise that it
        survives (a leader replaced meanwhile truncates it when it returns)."""
        self.leader_acked[value] = (partition, offset)

    def producer_id(
        self, owner: str, transactional_id: str | None, producer_id: int, epoch: int
    ) -> None:
        """One producer instance got (producer_id, epoch) from InitProducerId."""
        identity = f"transactional id {transactional_id}" if transactional_id else owner
        previous = self.producer_owner.setdefault(producer_id, identity)
        if previous != identity:
            self.fail(
                "producer-id-unique",
                f"producer id {producer_id} given to {previous} and to {identity}",
            )
        if transactional_id is None:
            return
        known = self.transactional_ids.get(transactional_id)
        # Without fsync a power loss may take back the coordinator's last records (the
        # trade-off odradek.acks.all.fsync=false accepts): the epoch may then go back.
        if known is not None and known != (producer_id, epoch) and not self.unsynced_power_loss:
            known_id, known_epoch = known
            if known_id != producer_id or epoch < known_epoch:
                self.fail(
                    "transactional-id-keeps-producer-id",
                    f"{transactional_id} had producer id {known_id} epoch {known_epoch}, "
                    f"then got {producer_id} epoch {epoch}",
                )
        self.transactional_ids[transactional_id] = (producer_id, epoch)

    def txn(self, number: int) -> Txn:
        return self.txns.setdefault(number, Txn(number))

    # -- consumers ---------------------------------------------------------------------------

    def assigned(self, member: str, generation: int, partitions: Iterable[int]) -> None:
        """`member` owns `partitions` in `generation` (from its rebalance listener)."""
        # Without fsync a power loss may take back the group's last generation, which is then
        # handed out again: count generations per such loss.
        era = self.power_losses if self.unsynced_power_loss else 0
        for partition in sorted(partitions):
            owner = self.owners.setdefault((era, generation, partition), member)
            if owner != member:
                self.fail(
                    "one-owner-per-generation",
                    f"partition {partition} owned by {owner} and {member} in generation "
                    f"{generation}",
                )

    def read(
        self,
        reader: str,
        session: int,
        read_committed: bool,
        partition: int,
        offset: int,
        value: str,
    ) -> None:
        """A consumer returned `value` at (partition, offset) in its assignment `session`."""
        self.reads += 1
        last = self.sessions.get((reader, session, partition))
        if last is not None and offset <= last:
            self.fail(
                "offsets-grow-within-a-session",
                f"{reader} read offset {offset} of partition {partition} after {last}",
            )
        self.sessions[(reader, session, partition)] = offset
        seen = self.read_at.setdefault((partition, offset), value)
        if seen != value and not self.power_losses:
            self.fail(
                "one-record-per-offset",
                f"partition {partition} offset {offset} read as {seen!r} and as {value!r}",
            )
        if read_committed and value.startswith("t"):
            self.read_committed_txn.setdefault(value, (partition, offset))
            txn = self.txns.get(_txn_number(value))
            if txn is None or not txn.commit_requested:
                state = "unknown" if txn is None else txn.state.value
                self.fail(
                    "read-committed-sees-only-committed",
                    f"{reader} read {value!r} (partition {partition} offset {offset}) while "
                    f"its transaction was {state}, before any commit was asked for",
                )
            elif txn.state is TxnState.ABORTED:
                self.fail(
                    "read-committed-sees-only-committed",
                    f"{reader} read {value!r} of an aborted transaction",
                )

    def txn_offsets(self, observed: int) -> None:
        """The committed offset of the transactional producer's consumer group, as read.

        Transaction n commits offset n; a value may only show up once n's commit was asked for,
        and never from an aborted transaction.
        """
        if observed < 0:
            return
        txn = self.txns.get(observed)
        if txn is None or not txn.commit_requested or txn.state is TxnState.ABORTED:
            state = "unknown" if txn is None else txn.state.value
            self.fail(
                "txn-offsets-only-when-committed",
                f"the group's committed offset is {observed}, written by transaction "
                f"{observed} which is {state}",
            )
        if observed < self.txn_offsets_seen and not self.unsynced_power_loss:
            self.fail(
                "txn-offsets-only-when-committed",
                f"the group's committed offset went back from {self.txn_offsets_seen} to "
                f"{observed}",
            )
        self.txn_offsets_seen = observed

    # -- the broker --------------------------------------------------------------------------

    def broker_state(self, logs: Iterable[tuple[str, PartitionLog]]) -> None:
        """LSO <= HW <= LEO on every partition (checked continuously)."""
        for name, log in logs:
            high_watermark = log.high_watermark
            if log.last_stable_offset > high_watermark:
                self.fail(
                    "lso-below-hw",
                    f"{name}: last stable offset {log.last_stable_offset} > high watermark "
                    f"{high_watermark}",
                )
            if high_watermark > log.log_end_offset:
                self.fail(
                    "hw-below-leo",
                    f"{name}: high watermark {high_watermark} > log end {log.log_end_offset}",
                )

    def final(self, logs: dict[int, PartitionLog]) -> dict[str, int]:
        """Check the topic's logs at the end of the run; returns counts for the report."""
        records = self._scan(logs)
        by_value: dict[str, LoggedRecord] = {}
        for record in records:
            first = by_value.setdefault(record.value, record)
            if first is not record and not record.value.startswith("a"):
                self.fail(
                    "no-duplicates",
                    f"{record.value!r} is in the log twice: partition {first.partition} "
                    f"offset {first.offset} and partition {record.partition} offset "
                    f"{record.offset}",
                )
        if not self.unsynced_power_loss:
            for value, (partition, offset) in sorted(self.acked.items()):
                found = by_value.get(value)
                if found is None or (found.partition, found.offset) != (partition, offset):
                    where = "missing" if found is None else f"at {found.partition}/{found.offset}"
                    self.fail(
                        "acknowledged-writes-survive",
                        f"{value!r} acknowledged at partition {partition} offset {offset} is "
                        f"{where}",
                    )
        if self.unsynced_power_loss:
            # Without fsync a power loss may also take back markers and the coordinator's
            # records: transactions can end half committed or hanging (the accepted trade-off).
            return {"records": len(records), "acknowledged": len(self.acked)}
        outcomes: dict[int, set[bool | None]] = {}
        for record in records:
            if record.transactional:
                outcomes.setdefault(_txn_number(record.value), set()).add(record.outcome)
        for number, seen in sorted(outcomes.items()):
            txn = self.txns.get(number)
            if len(seen) > 1:
                self.fail(
                    "transactions-all-or-nothing",
                    f"transaction {number} has records with outcomes {sorted(map(str, seen))}",
                )
            (outcome,) = seen
            state = txn.state if txn is not None else TxnState.UNKNOWN
            if outcome is True and not (txn is not None and txn.commit_requested):
                self.fail(
                    "transactions-all-or-nothing",
                    f"transaction {number} ({state.value}) was committed without a commit",
                )
            if outcome is not True and state is TxnState.COMMITTED:
                self.fail(
                    "transactions-all-or-nothing",
                    f"transaction {number} committed but its records are {outcome}",
                )
        for number, txn in sorted(self.txns.items()):
            if txn.state is not TxnState.COMMITTED or self.unsynced_power_loss:
                continue
            missing = [value for value in txn.sent if value not in by_value]
            if missing:
                self.fail(
                    "transactions-all-or-nothing",
                    f"committed transaction {number} lost {len(missing)} record(s): {missing[:3]}",
                )
        return {"records": len(records), "acknowledged": len(self.acked)}

    def _scan(self, logs: dict[int, PartitionLog]) -> list[LoggedRecord]:
        records: list[LoggedRecord] = []
        for partition, log in sorted(logs.items()):
            open_by_producer: dict[int, list[LoggedRecord]] = {}
            offset = log.log_start_offset
            end = log.log_end_offset
            previous_end = -1
            while offset < end:
                read = log.read(offset, 1 << 20, end, True)
                if not read.records:
                    break
                for header, batch in decode_batches(read.records):
                    if header.base_offset < previous_end:
                        self.fail(
                            "one-batch-per-offset",
                            f"partition {partition}: a batch at offset {header.base_offset} "
                            f"overlaps the previous one ending at {previous_end}",
                        )
                    previous_end = header.next_offset
                    offset = max(offset, header.next_offset)
                    if header.is_control:
                        key = batch[0].key if batch else None
                        commit = key is not None and key[2:4] == b"\x00\x01"
                        for record in open_by_producer.pop(header.producer_id, []):
                            record.outcome = commit
                        continue
                    for item in batch:
                        if item.value is None:
                            continue
                        record = LoggedRecord(
                            partition,
                            item.offset,
                            bytes(item.value).decode(),
                            header.producer_id,
                            header.is_transactional,
                        )
                        records.append(record)
                        if header.is_transactional:
                            open_by_producer.setdefault(header.producer_id, []).append(record)
        return records


def _txn_number(value: str) -> int:
    return int(value[1:].split("-", 1)[0])


class ClusterChecks:
    """The replication invariants of a cluster run (Kafka's Partition / ReplicaManager
    contract), reported through `checker` (its `fail`, acknowledged writes and reads).

    Loss is allowed only after an unclean election (`unclean_election`, set by the run when
    the controller shows a RECOVERING leader) or a power loss with fsync off
    (`checker.unsynced_power_loss`).
    """

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.unclean_election = False

    @property
    def loss_allowed(self) -> bool:
        return self.unclean_election or self.checker.unsynced_power_loss

    def replica_state(self, logs: Iterable[tuple[str, PartitionLog]]) -> None:
        """log start <= HW <= LEO (and LSO <= HW) on every replica (checked continuously)."""
        listed = list(logs)
        for name, log in listed:
            if log.log_start_offset > log.high_watermark:
                self.checker.fail(
                    "log-start-below-hw",
                    f"{name}: log start {log.log_start_offset} > high watermark "
                    f"{log.high_watermark}",
                )
        self.checker.broker_state(listed)

    def leader_in_isr(self, name: str, leader: int, isr: Iterable[int]) -> None:
        """The controller's leader is in the ISR, or there is none (the partition is offline)."""
        members = list(isr)
        if leader >= 0 and leader not in members:
            self.checker.fail(
                "leader-in-isr", f"{name}: leader {leader} is not in the ISR {members}"
            )

    def high_watermark_within_isr(
        self,
        name: str,
        leader_name: str,
        leader_log: PartitionLog,
        isr_logs: dict[str, PartitionLog],
    ) -> None:
        """The leader's HW <= the log end offset of every running ISR member: every offset
        below the HW is on every replica the controller may elect (checked continuously).

        `leader_log` is the log of the broker the controller names leader, whatever that
        broker itself knows: a leader restarted while the controller was unreachable once
        served its replicas' logs as a single broker and moved this HW past every follower
        (isolate-leader seed 2, a broker bug, not this check's)."""
        if self.loss_allowed:
            return
        high_watermark = leader_log.high_watermark
        for member, log in sorted(isr_logs.items()):
            if log.log_end_offset < high_watermark:
                self.checker.fail(
                    "hw-below-isr-leo",
                    f"{name}: the leader {leader_name}'s high watermark {high_watermark} > "
                    f"the log end {log.log_end_offset} of ISR member {member}",
                )

    def acknowledged_on_isr(
        self, name: str, partition: int, isr_logs: dict[str, PartitionLog]
    ) -> None:
        """Every acknowledged acks=all write of `partition` is in the log of every running
        member of the controller's ISR (`isr_logs`): the controller may elect any of them
        without an unclean election, so none may lack an acknowledged record (Kafka's
        clean-election promise; checked continuously).

        Sharper than `hw-below-isr-leo` after an election: a new leader's high watermark may
        lag the one its predecessor acknowledged up to, so a replica joining the ISR must also
        hold the leader's epoch start (Kafka's Partition.isFollowerInSync). An ISR the
        controller took from a stale AlterPartition (an older leader or partition epoch) may
        name a replica that never qualified: this catches it while it lacks an acknowledged
        record, before an election loses the record."""
        if self.loss_allowed:
            return
        offset = self.checker.max_acked.get(partition)
        if offset is None:
            return
        for member, log in sorted(isr_logs.items()):
            if log.log_end_offset <= offset:
                self.checker.fail(
                    "acknowledged-on-isr",
                    f"{name}: ISR member {member}'s log ends at {log.log_end_offset}, below "
                    f"the acknowledged write at offset {offset}",
                )

    def replicas_agree(self, name: str, logs: dict[str, PartitionLog]) -> None:
        """No two batches at one offset within a replica's log, nor different batches at one
        offset across the replicas' logs (compared once they converged): every batch of one
        replica is, wherever another replica holds its first offset, the very same batch
        there (same offsets, same CRC)."""
        listed: dict[str, list[tuple[int, int, int]]] = {}
        for replica, log in sorted(logs.items()):
            batches = _batches(log)
            previous_end = -1
            for base_offset, next_offset, _crc in batches:
                if base_offset < previous_end:
                    self.checker.fail(
                        "one-batch-per-offset",
                        f"{name} on {replica}: a batch at offset {base_offset} overlaps the "
                        f"previous one ending at {previous_end}",
                    )
                previous_end = next_offset
            listed[replica] = batches
        for replica, batches in listed.items():
            for other, other_batches in listed.items():
                if other == replica:
                    continue
                starts = [base for base, _next, _crc in other_batches]
                for batch in batches:
                    index = bisect.bisect_right(starts, batch[0]) - 1
                    if index < 0:
                        continue
                    there = other_batches[index]
                    if there[1] > batch[0] and there != batch:
                        self.checker.fail(
                            "replicas-agree",
                            f"{name} offset {batch[0]}: {replica} has a batch [{batch[0]}, "
                            f"{batch[1]}) (crc {batch[2]}), {other} [{there[0]}, {there[1]}) "
                            f"(crc {there[2]})",
                        )

    def consumed_records_survive(self, logs: dict[int, PartitionLog]) -> None:
        """Every record a consumer returned is still in the final leader's log at its offset:
        nothing once visible to a consumer was truncated later."""
        if self.loss_allowed:
            return
        found: dict[tuple[int, int], str] = {}
        for partition, log in logs.items():
            for offset, value in _values(log):
                found[(partition, offset)] = value
        for (partition, offset), value in sorted(self.checker.read_at.items()):
            now = found.get((partition, offset))
            if now != value:
                where = "gone" if now is None else f"now {now!r}"
                self.checker.fail(
                    "consumed-records-survive",
                    f"{value!r} was read at partition {partition} offset {offset}; it is {where}",
                )


class TransactionChecks:
    """The transaction invariants of a cluster run beyond `Checker`'s (KIP-98's contract as
    Kafka's TransactionCoordinator and read_committed Fetch keep it), reported through
    `checker`:

    - `transactions-end`: once the clients stopped and the faults healed, every transaction
      ends within a grace period: none stays Ongoing or PrepareCommit/PrepareAbort on any
      coordinator, and every leader's last stable offset reaches its high watermark (a hanging
      transaction, or one a new coordinator loaded in Prepare* and never finished, breaks it);
    - `read-committed-sees-only-committed`: every transactional record a read_committed
      consumer returned ends committed in the final leaders' logs (not aborted, not open);
    - `transactions-all-or-nothing` (offsets): the transactional group's final committed
      offset is that of a committed transaction, and no older than the last transaction whose
      commit the producer saw succeed (transaction n commits offset n).
    """

    def __init__(self, checker: Checker) -> None:
        self.checker = checker

    def transactions_end(self, unsettled: list[str], grace_s: float) -> None:
        """Fail with what still holds transactions open `grace_s` s after the clients stopped."""
        if unsettled:
            self.checker.fail(
                "transactions-end",
                f"{grace_s:g} s after the clients stopped: {', '.join(unsettled[:4])}",
            )

    def read_committed_outcomes(self, logs: dict[int, PartitionLog]) -> None:
        """Every record a read_committed consumer returned is committed in `logs` (partition
        -> the final leader's log), at the offset it was read at."""
        checker = self.checker
        if not checker.read_committed_txn or checker.unsynced_power_loss:
            return
        outcomes = {
            (record.partition, record.offset): (record.value, record.outcome)
            for record in checker._scan(logs)
            if record.transactional
        }
        for value, (partition, offset) in sorted(checker.read_committed_txn.items()):
            found = outcomes.get((partition, offset))
            if found is None or found[0] != value:
                continue  # gone or replaced: consumed-records-survive's concern
            outcome = found[1]
            if outcome is not True:
                ended = "open" if outcome is None else "aborted"
                checker.fail(
                    "read-committed-sees-only-committed",
                    f"a read_committed consumer returned {value!r} (partition {partition} "
                    f"offset {offset}); its transaction is {ended} in the final log",
                )

    def offsets_match_outcomes(self, committed: int) -> None:
        """The transactional group's final committed offset (-1: none) against the
        transactions: written by a committed one, and no older than the last one committed."""
        checker = self.checker
        checker.txn_offsets(committed)
        last = max(
            (number for number, txn in checker.txns.items() if txn.state is TxnState.COMMITTED),
            default=-1,
        )
        if committed < last:
            checker.fail(
                "transactions-all-or-nothing",
                f"transaction {last} committed, but the group's committed offset is "
                f"{committed}: its offsets were lost or never committed",
            )


def _batches(log: PartitionLog) -> list[tuple[int, int, int]]:
    """(base offset, next offset, crc) of every batch in the log."""
    found: list[tuple[int, int, int]] = []
    offset = log.log_start_offset
    end = log.log_end_offset
    while offset < end:
        read = log.read(offset, 1 << 20, end, True)
        if not read.records:
            break
        for header, _batch in decode_batches(read.records):
            found.append((header.base_offset, header.next_offset, header.crc))
            offset = max(offset, header.next_offset)
    return found


def _values(log: PartitionLog) -> list[tuple[int, str]]:
    """(offset, value) of every data record in the log."""
    found: list[tuple[int, str]] = []
    offset = log.log_start_offset
    end = log.log_end_offset
    while offset < end:
        read = log.read(offset, 1 << 20, end, True)
        if not read.records:
            break
        for header, batch in decode_batches(read.records):
            offset = max(offset, header.next_offset)
            if header.is_control:
                continue
            found.extend(
                (item.offset, bytes(item.value).decode())
                for item in batch
                if item.value is not None
            )
    return found
