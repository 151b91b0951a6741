"""The cluster timeline of a run on the checker's own cluster: Metadata polled every 250 ms.

Each sample is one moment (`time`: nanoseconds on the run's history clock, as every op's `time`):
each broker's state as the checker made it (up, down, paused, isolated), and each workload
partition's leader, leader epoch and ISR as an answering broker's Metadata v12 stated it then
(leader -1: none; a partition missing: no broker answered). `leader_at` answers "who led this
partition at that moment" for the report's anomaly diagrams.

Stored as JSON lines in `cluster-timeline.jsonl` in the run's directory.
"""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odradek.check.history import Clock
from odradek.check.local_cluster import LocalCluster

POLL_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class PartitionSample:
    leader: int  # -1: no leader
    leader_epoch: int
    isr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClusterSample:
    time: int  # ns on the history clock
    brokers: dict[int, str]  # node id -> up | down | paused | isolated (the controller is 0)
    partitions: dict[int, PartitionSample]

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "brokers": {str(node): state for node, state in self.brokers.items()},
            "partitions": {
                str(index): {"leader": p.leader, "leader_epoch": p.leader_epoch, "isr": list(p.isr)}
                for index, p in self.partitions.items()
            },
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> ClusterSample:
        return ClusterSample(
            int(data["time"]),
            {int(node): str(state) for node, state in data["brokers"].items()},
            {
                int(index): PartitionSample(
                    int(p["leader"]), int(p["leader_epoch"]), tuple(int(n) for n in p["isr"])
                )
                for index, p in data["partitions"].items()
            },
        )


@dataclass(slots=True)
class ClusterTimeline:
    """The polled samples of one run's workload topic, in time order."""

    topic: str
    samples: list[ClusterSample] = field(default_factory=list)

    def leader_at(self, topic: str, partition: int, time_ms: float) -> int | None:
        """The leader node id of `topic`-`partition` at `time_ms` (milliseconds on the history
        clock: an op's `time` / 1e6), from the last sample at or before it that named one;
        None before the first sample, for another topic, or when no sample had a leader."""
        if topic != self.topic:
            return None
        times = [sample.time for sample in self.samples]
        index = bisect.bisect_right(times, int(time_ms * 1e6))
        for sample in reversed(self.samples[:index]):
            state = sample.partitions.get(partition)
            if state is not None and state.leader >= 0:
                return state.leader
        return None

    def write(self, path: Path) -> None:
        with path.open("w") as file:
            file.write(json.dumps({"topic": self.topic}) + "\n")
            for sample in self.samples:
                file.write(json.dumps(sample.as_json()) + "\n")

    @staticmethod
    def read(path: Path) -> ClusterTimeline:
        lines = path.read_text().splitlines()
        timeline = ClusterTimeline(json.loads(lines[0])["topic"])
        timeline.samples = [ClusterSample.from_json(json.loads(line)) for line in lines[1:]]
        return timeline


def leader_at(timeline: ClusterTimeline, topic: str, partition: int, time_ms: float) -> int | None:
    """`timeline.leader_at(...)`: (topic, partition, time_ms) -> leader node id (or None)."""
    return timeline.leader_at(topic, partition, time_ms)


def sample(cluster: LocalCluster, topic: str, clock: Clock, nodes: Sequence[int]) -> ClusterSample:
    """One poll: broker states and the topic's partitions from the first answering broker."""
    now = clock.now()
    states = {node: cluster.state(node) for node in nodes}
    views = cluster.partitions(topic)
    return ClusterSample(
        now,
        states,
        {index: PartitionSample(v.leader, v.leader_epoch, v.isr) for index, v in views.items()},
    )


class TimelinePoller:
    """A thread appending a sample every `POLL_SECONDS` until `stop()`."""

    def __init__(self, cluster: LocalCluster, topic: str, clock: Clock) -> None:
        self.cluster = cluster
        self.clock = clock
        self.timeline = ClusterTimeline(topic)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="odradek-check-metadata", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        nodes = [0, *self.cluster.node_ids]
        while not self._stop.is_set():
            self.timeline.samples.append(
                sample(self.cluster, self.timeline.topic, self.clock, nodes)
            )
            self._stop.wait(POLL_SECONDS)

    def stop(self) -> ClusterTimeline:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.timeline
