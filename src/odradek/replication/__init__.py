"""Replication's deterministic core: ISR, high watermark, acks=all waits, log truncation.

Kafka 4's data plane as plain state machines and functions over `(state, event, now_ms)`: no
asyncio, no sockets, no files, no clock reads, no randomness. The broker's replica fetchers
and the simulator drive the same code.

What exists:
- `partition_state.PartitionState`: one partition's leader/follower state (Kafka's
  `Partition` + `Replica`): follower fetch states, committed ISR and the one ISR change in
  flight (maximal ISR), the high watermark (min.insync-strict, leader counted to its flushed
  offset with `odradek.acks.all.fsync`, caught-up replicas waiting to join counted), ISR
  expansion (`isFollowerInSync`, `isReplicaIsrEligible` with KIP-903 broker epochs) and
  shrink (`replica.lag.time.max.ms`), the AlterPartition proposal/answer cycle,
  become-leader / become-follower, KIP-320 epoch checks, KIP-207 OFFSET_NOT_AVAILABLE;
- `produce_wait`: NOT_ENOUGH_REPLICAS before an acks=all append, the purgatory completion
  test (NONE / NOT_ENOUGH_REPLICAS_AFTER_APPEND), REQUEST_TIMED_OUT on expiry;
- `truncation`: the leader's diverging-epoch check of a Fetch (KIP-595 `DivergingEpoch`,
  KIP-101/279 epoch rules), OffsetForLeaderEpoch answers, and the follower's truncation offset,
  initial fetch position, append plan (leader-epoch cache rebuilt from replicated batches) and
  high watermark;
- the leader-epoch cache and its `leader-epoch-checkpoint` live in
  `odradek.storage.leader_epoch` (storage owns files).

Wired into the broker by `odradek.broker.replica_manager` (only when `process.roles` is set):
become leader / follower from the metadata image, replica fetchers (Fetch v16 with
ReplicaState, diverging-epoch truncation, OFFSET_OUT_OF_RANGE restarts, fdatasync before the
next Fetch with `odradek.acks.all.fsync`, follower HW), the leader side of replica fetches,
AlterPartition to the controller, the periodic ISR shrink, and acks=all produces waiting on the
HW. `initial_fetch_position` needs an empty epoch cache to truncate to the HW, which a broker's
log never has today (LogManager opens every log with epoch 0 at its start).
"""
