"""Replication cost and failover on this machine (issue 12's Performance section).

A controller and 3 brokers (`odradek.Cluster`, real processes) against one single broker, loaded
by the raw produce generator of `broker_load.py`: Produce v9 frames of pre-encoded 1 KiB records
in large batches (~1 MiB), replayed with pipelining over one connection per partition, each to
its partition's leader. Topic: 3 partitions (one led by each broker), RF=3 on the cluster.
Every pass runs with `odradek.acks.all.fsync` on and off (a fresh cluster / broker each).

Rows:
- throughput (MB/s acknowledged) and broker CPU-seconds per GB acknowledged (the sum over the
  3 brokers on the cluster; "of it user" is the user-mode part, the rest is the kernel's, mostly
  page-cache and socket copies) for: single broker acks=1, RF=3 acks=all, then RF=3 acks=1 (after
  acks=all: acks=1 outruns the followers, and the backlog it leaves would stall acks=all; the
  followers' catch-up after the acks=1 pass is not in its CPU figure).
  Goals: cluster acks=all CPU/GB <= 3.5x the single broker's acks=1; acks=all / acks=1 at RF=3
  throughput >= 0.8;
- acks=1 at RF=3 twice: the leader's rate (acknowledged bytes over the pass; the followers fall
  behind) and the sustained rate (the same bytes over the time until every replica's log is
  as long as its leader's: kept up, the leader's rate would push followers out of the ISR);
  the throughput goal divides acks=all by the sustained rate;
- acks=all RF=3 produce latency p50/p99 at half the measured acks=all maximum (paced sends of
  the same ~1 MiB batches, not waiting for answers). Goal p99 <= 15 ms. Then 100 KiB batches at
  a fixed 10 MB/s: the floor of one replication round without queueing. Before each pass the
  bench waits until the page cache the last pass dirtied is written back (`settle_writeback`):
  a 6 s saturation pass leaves gigabytes for the disk, and their writeback would otherwise be
  charged to the next pass;
- event-loop lag under full acks=all load: round trip of ApiVersions to every broker every
  50 ms on its own connection (it waits behind whatever holds that broker's event loop, as the
  heartbeat task does). Goal: max < broker.session.timeout.ms / 3;
- leader kill -9 -> first acknowledged acks=all produce on the new leader (raw client polling
  Metadata and producing every 20 ms), median of --kills. Goal <= session timeout + 1 s;
- a follower stopped, the leader given --behind-mb MB with acks=1, the follower restarted:
  seconds from its restart until it is back in the ISR.

    .venv/bin/python benchmarks/replication_bench.py [--seconds 6] [--kills 10] [--quick]
"""

from __future__ import annotations

import argparse
import glob
import os
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from _common import CLOCK_TICKS, HOST, BrokerProcess, create_topic, print_table
from broker_load import (
    RECORD_BYTES,
    TOPIC,
    produce_error_codes,
    produce_frame,
    read_response,
)
from odradek.cluster import Cluster
from odradek.protocol.record_batch import Record, encode_batch

PARTITIONS = 3
BIG_BATCH_RECORDS = 1000  # ~1 MiB
LATENCY_BATCH_RECORDS = 100  # ~100 KiB
IN_FLIGHT = 5
LOW_RATE_MB = 10  # MB/s of the second, fixed-rate latency pass
SESSION_TIMEOUT_MS = 3000
CLUSTER_CONFIG = {
    "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
    "broker.heartbeat.interval.ms": "500",
    "replica.lag.time.max.ms": "5000",
    "log.segment.bytes": str(256 * 1024 * 1024),
}


def batch_of(records: int) -> bytes:
    return encode_batch(
        [Record(None, b"r" * RECORD_BYTES)] * records, base_timestamp=int(time.time() * 1000)
    )


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


@dataclass
class Load:
    acked_bytes: int = 0
    errors: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    cpu_user: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.acked_bytes / self.elapsed / 1e6 if self.elapsed else 0.0

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu / (self.acked_bytes / 1e9) if self.acked_bytes else float("nan")

    @property
    def user_per_gb(self) -> float:
        return self.cpu_user / (self.acked_bytes / 1e9) if self.acked_bytes else float("nan")


def saturate(
    ports: dict[int, int], acks: int, seconds: float, pids: list[int], batch: bytes
) -> Load:
    """Each partition's leader port -> pipelined produce for `seconds`; CPU of `pids`."""
    load = Load()
    lock = threading.Lock()

    def work(partition: int, port: int) -> None:
        frame = produce_frame(partition, acks, batch)
        buffer = bytearray(4096)
        sent = answered = ok = errors = 0
        with socket.create_connection((HOST, port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.perf_counter() + seconds
            while sent < IN_FLIGHT:
                sock.sendall(frame)
                sent += 1
            while answered < sent:
                buffer, response = read_response(sock, buffer)
                answered += 1
                if any(code != 0 for code in produce_error_codes(response)):
                    errors += 1
                else:
                    ok += 1
                if time.perf_counter() < deadline:
                    sock.sendall(frame)
                    sent += 1
        with lock:
            load.acked_bytes += ok * len(batch)
            load.errors += errors

    threads = [
        threading.Thread(target=work, args=(partition, port), daemon=True)
        for partition, port in ports.items()
    ]
    before = [cpu_split(pid) for pid in pids]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.elapsed = time.perf_counter() - start
    after = [cpu_split(pid) for pid in pids]
    load.cpu_user = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    load.cpu = load.cpu_user + sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return load


def paced_latencies(
    ports: dict[int, int], bytes_per_s: float, seconds: float, batch: bytes
) -> list[float]:
    """acks=all produce latencies (ms) of `batch` sent at `bytes_per_s` over the partitions."""
    interval = len(batch) * len(ports) / bytes_per_s
    latencies: list[float] = []
    lock = threading.Lock()

    def work(partition: int, port: int) -> None:
        frame = produce_frame(partition, -1, batch)
        sent_at: list[float] = []
        with socket.create_connection((HOST, port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def reader() -> None:
                buffer = bytearray(4096)
                for index in range(count):
                    buffer, _response = read_response(sock, buffer)
                    with lock:
                        latencies.append((time.perf_counter() - sent_at[index]) * 1000)

            count = max(int(seconds / interval), 1)
            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            start = time.perf_counter()
            for index in range(count):
                delay = start + index * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent_at.append(time.perf_counter())
                sock.sendall(frame)
            thread.join(30)

    threads = [
        threading.Thread(target=work, args=(p, port), daemon=True) for p, port in ports.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def api_versions_rtt(port: int) -> Callable[[], float]:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = _api_versions_frame()
    buffer = bytearray(4096)

    def probe() -> float:
        nonlocal buffer
        start = time.perf_counter()
        sock.sendall(frame)
        buffer, _ = read_response(sock, buffer)
        return (time.perf_counter() - start) * 1000

    return probe


def _api_versions_frame() -> bytes:
    header = struct.pack(">hhih", 18, 0, 1, 5) + b"probe"  # ApiVersions v0, header v1
    return struct.pack(">i", len(header)) + header


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def leaders(cluster: Cluster) -> dict[int, int]:
    result = {}
    for partition in range(PARTITIONS):
        leader = cluster.leader_of(TOPIC, partition)
        assert leader is not None
        result[partition] = cluster.ports[leader]
    return result


def start_cluster(fsync: bool) -> Cluster:
    cluster = Cluster(
        brokers=3,
        config={**CLUSTER_CONFIG, "odradek.acks.all.fsync": str(fsync).lower()},
    ).start()
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3)])[
        TOPIC
    ].result(15)
    for partition in range(PARTITIONS):
        cluster.wait_for_isr(TOPIC, partition, size=3, timeout_s=30)
    return cluster


def dirty_bytes() -> int:
    """Page-cache bytes not yet on disk (Dirty + Writeback in /proc/meminfo)."""
    total = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, _, rest = line.partition(":")
            if name in ("Dirty", "Writeback"):
                total += int(rest.split()[0]) * 1024
    return total


def settle_writeback(limit_bytes: int = 64 << 20, timeout_s: float = 120) -> float:
    """Wait until the kernel has written back what earlier passes left dirty (at most
    `limit_bytes` left, or `timeout_s`); returns the seconds waited. A saturation pass leaves
    gigabytes in the page cache, and the disk writing them back would be charged to the next
    pass's latency: a backlog of the earlier burst, not that pass's load."""
    started = time.perf_counter()
    while dirty_bytes() > limit_bytes and time.perf_counter() - started < timeout_s:
        time.sleep(0.1)
    return time.perf_counter() - started


def replica_sizes(cluster: Cluster) -> dict[int, set[int]]:
    """Partition -> the set of its log sizes in bytes over the brokers (one value: in step)."""
    sizes: dict[int, set[int]] = {partition: set() for partition in range(PARTITIONS)}
    for node in cluster.node_ids:
        for partition in range(PARTITIONS):
            pattern = str(cluster.data_dir / f"node-{node}" / f"{TOPIC}-{partition}" / "*.log")
            sizes[partition].add(sum(os.path.getsize(path) for path in glob.glob(pattern)))
    return sizes


def seconds_until_replicated(cluster: Cluster, started: float, timeout_s: float = 300) -> float:
    """Seconds from `started` until every replica's log is as long as its leader's."""
    while time.perf_counter() - started < timeout_s:
        if all(len(sizes) == 1 for sizes in replica_sizes(cluster).values()):
            break
        time.sleep(0.02)
    return time.perf_counter() - started


def acks_all_once(port: int, partition: int, batch: bytes) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.settimeout(2)
            sock.sendall(produce_frame(partition, -1, batch))
            _buffer, response = read_response(sock, bytearray(4096))
            return all(code == 0 for code in produce_error_codes(response))
    except OSError:
        return False


def failover_seconds(cluster: Cluster, kills: int) -> list[float]:
    batch = batch_of(1)
    times = []
    for _ in range(kills):
        leader = cluster.leader_of(TOPIC, 0)
        assert leader is not None
        killed_at = time.monotonic()
        cluster.kill(leader)
        while time.monotonic() - killed_at < 60:
            try:
                current = cluster.leader_of(TOPIC, 0)
            except Exception:
                current = None
            if (
                current is not None
                and current != leader
                and acks_all_once(cluster.ports[current], 0, batch)
            ):
                times.append(time.monotonic() - killed_at)
                break
            time.sleep(0.02)
        cluster.restart(leader)
        cluster.wait_for_isr(TOPIC, 0, size=3, timeout_s=60)
    return times


def rejoin_seconds(cluster: Cluster, behind_mb: int) -> float:
    leader = cluster.leader_of(TOPIC, 0)
    assert leader is not None
    follower = next(node for node in cluster.node_ids if node != leader)
    cluster.terminate(follower)
    batch = batch_of(BIG_BATCH_RECORDS)
    needed = behind_mb * 1_000_000 // len(batch) + 1
    with socket.create_connection((HOST, cluster.ports[leader])) as sock:
        frame = produce_frame(0, 1, batch)
        buffer = bytearray(4096)
        for _ in range(needed):
            sock.sendall(frame)
            buffer, _response = read_response(sock, buffer)
    started = time.monotonic()
    cluster.restart(follower)
    cluster.wait_for_isr(TOPIC, 0, size=3, timeout_s=300)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="per saturation pass")
    parser.add_argument("--kills", type=int, default=10, help="leader kills to take the median")
    parser.add_argument("--behind-mb", type=int, default=200, help="follower lag before rejoin")
    parser.add_argument("--quick", action="store_true", help="2 s passes, 3 kills, 50 MB behind")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.kills, args.behind_mb = 2.0, 3, 50
    big = batch_of(BIG_BATCH_RECORDS)
    rows: list[list[str]] = []
    summary: dict[str, float] = {}
    for fsync in (True, False):
        label = "fsync on" if fsync else "fsync off"
        settle_writeback()
        single = BrokerProcess({"odradek.acks.all.fsync": str(fsync).lower()}).start()
        try:
            create_topic(single.bootstrap_servers, TOPIC, PARTITIONS, {})
            one = saturate(
                dict.fromkeys(range(PARTITIONS), single.port), 1, args.seconds, [single.pid], big
            )
        finally:
            single.stop()
        settle_writeback()
        cluster = start_cluster(fsync)
        try:
            pids = [cluster.pid(node) for node in cluster.node_ids]
            ports = leaders(cluster)
            probes = {node: api_versions_rtt(cluster.ports[node]) for node in cluster.node_ids}
            lags: list[float] = []
            stop = threading.Event()

            def watch(
                stop: threading.Event = stop,
                lags: list[float] = lags,
                probes: dict[int, Callable[[], float]] = probes,
            ) -> None:
                while not stop.is_set():
                    for probe in probes.values():
                        lags.append(probe())
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            rf3_all = saturate(ports, -1, args.seconds, pids, big)
            stop.set()
            watcher.join()
            # Half the maximum just measured, with the batches it was measured with, once the
            # saturation pass's page cache is on disk.
            settle_writeback()
            latencies = paced_latencies(
                ports, rf3_all.acked_bytes / rf3_all.elapsed / 2, args.seconds, big
            )
            # The same at a fixed low rate with 100 KiB batches: the per-round floor.
            low_rate_latencies = paced_latencies(
                ports, LOW_RATE_MB * 1e6, args.seconds, batch_of(LATENCY_BATCH_RECORDS)
            )
            # acks=1 after acks=all: acks=1 leaves the followers a backlog that every acks=all
            # produce would first wait for. Caught up again before the next measurement.
            settle_writeback()
            started = time.perf_counter()
            cpu_before = [cpu_split(pid) for pid in pids]
            rf3_one = saturate(ports, 1, args.seconds, pids, big)
            # acks=1's rate counts only the leader: the followers fall behind, and kept up
            # they would leave the ISR after replica.lag.time.max.ms. Its sustained rate is
            # the bytes over the time until every replica has them.
            rf3_one_replicated = Load(
                acked_bytes=rf3_one.acked_bytes,
                elapsed=seconds_until_replicated(cluster, started),
            )
            cpu_after = [cpu_split(pid) for pid in pids]
            rf3_one_replicated.cpu_user = sum(
                a[0] - b[0] for a, b in zip(cpu_after, cpu_before, strict=True)
            )
            rf3_one_replicated.cpu = rf3_one_replicated.cpu_user + sum(
                a[1] - b[1] for a, b in zip(cpu_after, cpu_before, strict=True)
            )
            for partition in range(PARTITIONS):
                cluster.wait_for_isr(TOPIC, partition, size=3, timeout_s=120)
            failovers = failover_seconds(cluster, args.kills) if fsync else []
            rejoin = rejoin_seconds(cluster, args.behind_mb) if fsync else float("nan")
        finally:
            cluster.stop()
        for name, load in (
            ("single broker acks=1", one),
            ("RF=3 acks=1 (leader's rate)", rf3_one),
            ("RF=3 acks=1 until all replicas have it", rf3_one_replicated),
            ("RF=3 acks=all", rf3_all),
        ):
            rows.append(
                [
                    label,
                    name,
                    f"{load.mb_per_s:.1f}",
                    f"{load.cpu_per_gb:.2f}",
                    f"{load.user_per_gb:.2f}",
                    str(load.errors),
                ]
            )
        summary[f"cpu_ratio {label}"] = rf3_all.cpu_per_gb / one.cpu_per_gb
        summary[f"user_ratio {label}"] = rf3_all.user_per_gb / one.user_per_gb
        summary[f"all_vs_one {label}"] = rf3_all.mb_per_s / max(rf3_one_replicated.mb_per_s, 1e-9)
        summary[f"all_vs_leader {label}"] = rf3_all.mb_per_s / max(rf3_one.mb_per_s, 1e-9)
        summary[f"p50 {label}"] = percentile(latencies, 0.5)
        summary[f"p99 {label}"] = percentile(latencies, 0.99)
        summary[f"low p50 {label}"] = percentile(low_rate_latencies, 0.5)
        summary[f"low p99 {label}"] = percentile(low_rate_latencies, 0.99)
        summary[f"half rate {label}"] = rf3_all.mb_per_s / 2
        summary[f"lag max {label}"] = max(lags, default=float("nan"))
        summary[f"lag p99 {label}"] = percentile(lags, 0.99)
        if fsync:
            summary["failover median"] = statistics.median(failovers) if failovers else float("nan")
            summary["failover max"] = max(failovers, default=float("nan"))
            summary["failover n"] = len(failovers)
            summary["kills"] = args.kills
            summary["rejoin"] = rejoin
    print_table(
        "Throughput and broker CPU (3 partitions, 1 KiB records, ~1 MiB batches)",
        ["fsync", "setup", "MB/s acked", "CPU s/GB", "of it user", "errors"],
        rows,
    )
    goals = []
    for label in ("fsync on", "fsync off"):
        goals += [
            [
                label,
                "CPU/GB RF=3 acks=all ÷ single acks=1",
                f"{summary[f'cpu_ratio {label}']:.2f}x",
                "≤ 3.5x",
            ],
            [
                label,
                "  user CPU only (system time is mostly the kernel's page-cache copies)",
                f"{summary[f'user_ratio {label}']:.2f}x",
                "-",
            ],
            [
                label,
                "RF=3 acks=all ÷ acks=1 throughput (acks=1 until all replicas have it)",
                f"{summary[f'all_vs_one {label}']:.2f}",
                "≥ 0.8",
            ],
            [
                label,
                "  ÷ acks=1 at the leader's rate (followers falling behind)",
                f"{summary[f'all_vs_leader {label}']:.2f}",
                "-",
            ],
            [
                label,
                f"acks=all p50 / p99 at half max, {summary[f'half rate {label}']:.0f} MB/s"
                " (ms, ~1 MiB batches)",
                f"{summary[f'p50 {label}']:.1f} / {summary[f'p99 {label}']:.1f}",
                "p99 ≤ 15",
            ],
            [
                label,
                f"acks=all p50 / p99 at {LOW_RATE_MB} MB/s (ms, 100 KiB batches)",
                f"{summary[f'low p50 {label}']:.1f} / {summary[f'low p99 {label}']:.1f}",
                "-",
            ],
            [
                label,
                "event-loop lag p99 / max (ms)",
                f"{summary[f'lag p99 {label}']:.1f} / {summary[f'lag max {label}']:.1f}",
                f"max < {SESSION_TIMEOUT_MS // 3}",
            ],
        ]
    goals += [
        [
            "fsync on",
            f"leader kill -9 → first acks=all ack (median, {int(summary['failover n'])}"
            f" of {int(summary['kills'])} acked within 60 s)",
            f"{summary['failover median']:.2f} s (max {summary['failover max']:.2f})",
            f"≤ {SESSION_TIMEOUT_MS / 1000 + 1:.0f} s",
        ],
        [
            "fsync on",
            f"follower {args.behind_mb} MB behind → back in ISR",
            f"{summary['rejoin']:.2f} s",
            "-",
        ],
    ]
    print_table(
        f"Goals (broker.session.timeout.ms={SESSION_TIMEOUT_MS}, {args.seconds:g} s passes)",
        ["fsync", "measure", "value", "goal"],
        goals,
    )


if __name__ == "__main__":
    main()
