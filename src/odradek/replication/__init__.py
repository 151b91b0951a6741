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

Wiring still to do (none of it is on the single-broker path):
- storage: `PartitionLog` keeps a `LeaderEpochFileCache` (assign on every leader append,
  `truncate_from_end` on truncation, `truncate_from_start` on log-start moves and after load)
  and gains `append_as_follower` that appends fetched batches as they are, replaying producer
  state (`ProducerStateManager.replay_data_batch`), control markers (transaction index, LSO)
  and the epoch entries of `plan_follower_append`, plus `truncate_to(offset)`;
- broker: replica fetcher tasks (one per source broker) that build Fetch v15+ with ReplicaState
  (replica id, broker epoch), `initial_fetch_position`, apply `truncate_on_diverging_epoch`,
  fdatasync what they appended before the next Fetch when `odradek.acks.all.fsync` is on, and
  set the follower HW with `follower_high_watermark`;
- broker: Fetch handler branches for replica fetches (`check_fetch_position`, then
  `PartitionState.update_follower_fetch`, HW in the response), OffsetForLeaderEpoch and
  ListOffsets (`list_offsets_error`) from these functions;
- broker: the DelayedProduce purgatory hook: `check_before_append`, then `produce_completion`
  on every HW change, `expired` on timeout; a periodic `maybe_shrink_isr`;
- broker: the AlterPartition client to the controller and Metadata answers from the
  controller's image (`become_leader` / `become_follower` / `on_metadata_update`).
"""
