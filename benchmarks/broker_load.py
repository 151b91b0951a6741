"""What the broker can take when the client is not the limit: raw Produce and Fetch load.

Produce: Produce v9 frames holding one pre-encoded, uncompressed batch of 1 KiB records
(~1 MiB) are built once and replayed over several TCP connections, each with up to
--in-flight requests pipelined; responses are read and checked for error codes (cheap: they
are tiny) but nothing else is done per request, so the client costs a few syscalls per MiB.
One pass with acks=1, one with acks=-1 (all) and the broker's default
odradek.acks.all.fsync=true, which measures group-commit fdatasync.

Fetch: after the produce passes, each connection reads its partition from offset 0 with
Fetch v12 (by topic name) until it reaches the high watermark (catch-up read, data still in
the page cache). Records are not decoded: the client only walks the batch headers of each
response (iter_batch_headers) to find the next fetch offset, and counts bytes.

Reference: before the broker passes, this script appends 1 MiB chunks to a new file on the same
file system for as long, with no broker: the machine's page-cache append ceiling, which bounds
produce. Every pass starts after os.sync(), so dirty pages of one pass do not throttle the next.

Broker CPU is utime+stime of the `odradek serve` process from /proc/<pid>/stat, per GB moved.

    .venv/bin/python benchmarks/broker_load.py [--seconds 8] [--connections 4] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import os
import resource
import shutil
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import HOST, BrokerProcess, cpu_seconds, create_topic, print_table, settle_page_cache
from odradek.protocol.record_batch import Record, encode_batch, iter_batch_headers

TOPIC = "broker-load"
RECORD_BYTES = 1024
RECORDS_PER_BATCH = 1000  # ~1 MiB batches, under the default max.message.bytes (1048588)
PRODUCE_API, PRODUCE_VERSION = 0, 9
FETCH_API, FETCH_VERSION = 1, 12
CLIENT_ID = b"odradek-broker-load"

_INT32 = struct.Struct(">i")
_INT16 = struct.Struct(">h")
_INT64 = struct.Struct(">q")

GOALS = {
    "produce": "≥300 MB/s",
    "produce_all": "≥0.6x acks=1",
    "fetch": "≥800 MB/s",
}


# -- framing --------------------------------------------------------------------------------


def request_frame(api_key: int, api_version: int, correlation_id: int, body: bytes) -> bytes:
    """i32 size + request header v2 (flexible) + body."""
    header = (
        struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID))
        + CLIENT_ID
        + b"\x00"  # no tagged fields
    )
    return _INT32.pack(len(header) + len(body)) + header + body


def produce_frame(partition: int, acks: int, batch: bytes) -> bytes:
    from kio.schema.produce.v9.request import (
        PartitionProduceData,
        ProduceRequest,
        TopicProduceData,
    )
    from kio.serial import entity_writer
    from kio.static.primitive import i16, i32

    request = ProduceRequest(
        transactional_id=None,
        acks=i16(acks),
        timeout=datetime.timedelta(seconds=30),
        topic_data=(
            TopicProduceData(
                name=TOPIC,
                partition_data=(PartitionProduceData(index=i32(partition), records=batch),),
            ),
        ),
    )
    buffer = io.BytesIO()
    entity_writer(ProduceRequest)(buffer, request)
    return request_frame(PRODUCE_API, PRODUCE_VERSION, partition, buffer.getvalue())


def fetch_frame(partition: int, offset: int, partition_max_bytes: int) -> bytes:
    from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
    from kio.serial import entity_writer
    from kio.static.primitive import i32, i64

    request = FetchRequest(
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=i32(1),
        max_bytes=i32(partition_max_bytes),
        topics=(
            FetchTopic(
                topic=TOPIC,
                partitions=(
                    FetchPartition(
                        partition=i32(partition),
                        fetch_offset=i64(offset),
                        partition_max_bytes=i32(partition_max_bytes),
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
    )
    buffer = io.BytesIO()
    entity_writer(FetchRequest)(buffer, request)
    return request_frame(FETCH_API, FETCH_VERSION, partition, buffer.getvalue())


def recv_exact(sock: socket.socket, view: memoryview) -> None:
    received = 0
    wanted = len(view)
    while received < wanted:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise ConnectionError("broker closed the connection")
        received += count


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[bytearray, memoryview]:
    """Read one response frame into `buffer` (grown if needed); return it and a view of it."""
    size_bytes = bytearray(4)
    recv_exact(sock, memoryview(size_bytes))
    (size,) = _INT32.unpack(size_bytes)
    if size > len(buffer):
        buffer = bytearray(size)
    view = memoryview(buffer)[:size]
    recv_exact(sock, view)
    return buffer, view


def read_uvarint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def produce_error_codes(response: memoryview) -> list[int]:
    """Error codes of a Produce v9 response (header v1: correlation id + tag buffer)."""
    from kio.schema.produce.v9.response import ProduceResponse
    from kio.serial import entity_reader

    body, _size = entity_reader(ProduceResponse)(bytes(response), 5)
    return [p.error_code.value for t in body.responses for p in t.partition_responses]


def parse_fetch_response(response: memoryview) -> tuple[int, int, memoryview]:
    """(error code, high watermark, records) of a one-partition Fetch v12 response."""
    position = 4 + 1  # correlation id, empty tag buffer (response header v1)
    position += 4 + 2 + 4  # throttle_time_ms, error_code, session_id
    _topics, position = read_uvarint(response, position)
    name_length, position = read_uvarint(response, position)
    position += name_length - 1
    _partitions, position = read_uvarint(response, position)
    position += 4  # partition_index
    (error_code,) = _INT16.unpack_from(response, position)
    position += 2
    (high_watermark,) = _INT64.unpack_from(response, position)
    position += 8 + 8 + 8  # high_watermark, last_stable_offset, log_start_offset
    aborted, position = read_uvarint(response, position)
    if aborted > 1:
        raise ValueError("aborted transactions in a benchmark topic")
    position += 4  # preferred_read_replica
    records_length, position = read_uvarint(response, position)
    records_length = max(records_length - 1, 0)
    return error_code, high_watermark, response[position : position + records_length]


# -- load passes ----------------------------------------------------------------------------


@dataclass
class ExternalBroker:
    """A broker this script did not start (--bootstrap), e.g. one running under a profiler."""

    port: int
    pid: int

    def stop(self) -> None:
        """Not ours to stop."""


@dataclass
class PassResult:
    bytes_moved: int = 0
    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    broker_cpu: float = 0.0
    client_cpu: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, bytes_moved: int, requests: int, errors: int) -> None:
        with self.lock:
            self.bytes_moved += bytes_moved
            self.requests += requests
            self.errors += errors


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_pass(broker: BrokerProcess | ExternalBroker, connections: int, work: object) -> PassResult:
    """Run `work(connection_index, result)` in one thread per connection, timing the whole."""
    result = PassResult()
    threads = [
        threading.Thread(target=work, args=(index, result), daemon=True)  # type: ignore[arg-type]
        for index in range(connections)
    ]
    broker_cpu = (lambda: cpu_seconds(broker.pid)) if broker.pid else (lambda: float("nan"))
    cpu_before, client_before = broker_cpu(), _process_cpu()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed = time.perf_counter() - start
    result.broker_cpu = broker_cpu() - cpu_before
    result.client_cpu = _process_cpu() - client_before
    return result


def produce_pass(
    broker: BrokerProcess | ExternalBroker,
    connections: int,
    acks: int,
    seconds: float,
    in_flight: int,
) -> PassResult:
    batch = encode_batch(
        [Record(None, b"r" * RECORD_BYTES)] * RECORDS_PER_BATCH,
        base_timestamp=int(time.time() * 1000),
    )
    frames = [produce_frame(index, acks, batch) for index in range(connections)]

    def work(index: int, result: PassResult) -> None:
        frame = frames[index]
        buffer = bytearray(4096)
        sent = answered = errors = 0
        with socket.create_connection((HOST, broker.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.perf_counter() + seconds
            while sent < in_flight:
                sock.sendall(frame)
                sent += 1
            while answered < sent:
                buffer, response = read_response(sock, buffer)
                answered += 1
                errors += sum(1 for code in produce_error_codes(response) if code != 0)
                if time.perf_counter() < deadline:
                    sock.sendall(frame)
                    sent += 1
        result.add(answered * len(batch), answered, errors)

    return run_pass(broker, connections, work)


def append_ceiling_pass(
    seconds: float, sync_every: int = 0, chunk_bytes: int = RECORDS_PER_BATCH * RECORD_BYTES
) -> PassResult:
    """The machine's own limit: Python appending 1 MiB chunks to a new file, no broker.

    With `sync_every`, an fdatasync after every that many chunks: what group commit can reach.
    """
    result = PassResult()
    directory = Path(tempfile.mkdtemp(prefix="odradek-bench-append-"))
    chunk = b"a" * chunk_bytes
    try:
        with open(directory / "append.log", "wb", buffering=0) as file:
            client_before = _process_cpu()
            start = time.perf_counter()
            deadline = start + seconds
            written = 0
            chunks = 0
            while time.perf_counter() < deadline:
                written += file.write(chunk)
                chunks += 1
                if sync_every and chunks % sync_every == 0:
                    os.fdatasync(file.fileno())
            result.elapsed = time.perf_counter() - start
            result.client_cpu = _process_cpu() - client_before
        result.add(written, written // chunk_bytes, 0)
        result.broker_cpu = float("nan")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return result


def fetch_pass(
    broker: BrokerProcess | ExternalBroker,
    connections: int,
    seconds: float,
    partition_max_bytes: int,
) -> PassResult:
    def work(index: int, result: PassResult) -> None:
        buffer = bytearray(partition_max_bytes + 65536)
        offset = fetched = requests = errors = 0
        with socket.create_connection((HOST, broker.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                sock.sendall(fetch_frame(index, offset, partition_max_bytes))
                buffer, response = read_response(sock, buffer)
                requests += 1
                error_code, high_watermark, records = parse_fetch_response(response)
                if error_code != 0:
                    errors += 1
                    break
                last = None
                for _position, header in iter_batch_headers(records):
                    last = header
                if last is None:
                    break
                fetched += len(records)
                offset = last.next_offset
                if offset >= high_watermark:
                    break
        result.add(fetched, requests, errors)

    return run_pass(broker, connections, work)


# -- report ---------------------------------------------------------------------------------


PASSES = ("append", "acks1", "acksall", "fetch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per produce pass")
    parser.add_argument("--connections", type=int, default=4, help="one partition each")
    parser.add_argument("--in-flight", type=int, default=5, help="pipelined produce requests")
    parser.add_argument("--fetch-bytes", type=int, default=8 << 20, help="partition_max_bytes")
    parser.add_argument("--quick", action="store_true", help="3-second passes")
    parser.add_argument(
        "--passes", default=",".join(PASSES), help=f"comma-separated subset of {PASSES}"
    )
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="load a running broker instead of starting one (needs --broker-pid for CPU)",
    )
    parser.add_argument("--broker-pid", type=int, default=0)
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    passes = [name for name in args.passes.split(",") if name]
    if unknown := set(passes) - set(PASSES):
        parser.error(f"unknown passes {sorted(unknown)}")
    print(
        f"broker_load: {args.connections} connections x 1 partition each, produce frames of "
        f"{RECORDS_PER_BATCH} x {RECORD_BYTES} B records (~1 MiB uncompressed batch, "
        f"pre-encoded once), up to {args.in_flight} in flight per connection, "
        f"{seconds:g} s per produce pass; then a catch-up Fetch v12 of everything written "
        f"(partition_max_bytes={args.fetch_bytes >> 20} MiB, one request in flight per "
        "connection). A fresh broker, and the page cache settled, before each write pass. "
        "MB = 10^6 bytes of record batches. "
        "The client runs in this process "
        "(threads, blocking sockets); 'client CPU' is this process's."
    )
    results: dict[str, PassResult] = {}
    settle = "sync"

    def fresh_broker() -> BrokerProcess | ExternalBroker:
        # Each write pass gets its own broker and data directory, after the page cache is
        # settled, so no pass inherits the previous one's dirty or cached pages.
        nonlocal settle
        if args.bootstrap:
            os.sync()
            broker: BrokerProcess | ExternalBroker = ExternalBroker(
                int(args.bootstrap.rpartition(":")[2]), args.broker_pid
            )
        else:
            settle = settle_page_cache()
            broker = BrokerProcess().start()
        create_topic(f"{HOST}:{broker.port}", TOPIC, args.connections, {})
        return broker

    if "append" in passes:
        settle = settle_page_cache()
        results["file append ceiling (no broker)"] = append_ceiling_pass(seconds)
        settle = settle_page_cache()
        results[f"file append + fdatasync/{args.connections} MiB (no broker)"] = (
            append_ceiling_pass(seconds, sync_every=args.connections)
        )
    last: BrokerProcess | ExternalBroker | None = None
    try:
        for name, acks, label in (
            ("acks1", 1, "produce acks=1"),
            ("acksall", -1, "produce acks=all (group-commit fsync)"),
        ):
            if name not in passes:
                continue
            if last is not None:
                last.stop()
            last = fresh_broker()
            results[label] = produce_pass(last, args.connections, acks, seconds, args.in_flight)
        if "fetch" in passes:
            if last is None:
                last = fresh_broker()
                produce_pass(last, args.connections, 1, seconds, args.in_flight)
            # Catch-up reads of what the last pass wrote, from the page cache.
            results["catch-up fetch"] = fetch_pass(
                last, args.connections, max(seconds * 3, 10.0), args.fetch_bytes
            )
    finally:
        if last is not None:
            last.stop()
    print(f"page cache before each write pass: {settle}")
    print_table(
        "Raw broker load", COLUMNS, [row(label, r, results) for label, r in results.items()]
    )


COLUMNS = [
    "pass",
    "MB/s",
    "goal",
    "met",
    "GB moved",
    "requests",
    "broker CPU s/GB",
    "client CPU s/GB",
    "errors",
]


def row(label: str, result: PassResult, results: dict[str, PassResult]) -> list[str]:
    rate = result.bytes_moved / result.elapsed
    gigabytes = result.bytes_moved / 1e9
    acks_one = results.get("produce acks=1")
    if label.startswith("produce acks=all"):
        goal = GOALS["produce_all"]
        if acks_one is not None:
            ratio = rate / (acks_one.bytes_moved / acks_one.elapsed)
            shown, met = (
                f"{rate / 1e6:,.0f} ({ratio:.3f}x acks=1)",
                ("yes" if ratio >= 0.6 else "NO"),
            )
        else:
            shown, met = f"{rate / 1e6:,.0f}", "?"
    elif label.startswith("file append"):
        goal, shown, met = "(reference)", f"{rate / 1e6:,.0f}", ""
    else:
        goal = GOALS["produce"] if label.startswith("produce") else GOALS["fetch"]
        target = 300e6 if label.startswith("produce") else 800e6
        shown, met = f"{rate / 1e6:,.0f}", ("yes" if rate >= target else "NO")
    per_gigabyte = (lambda seconds: f"{seconds / gigabytes:.2f}") if gigabytes else (lambda _: "-")
    return [
        label,
        shown,
        goal,
        met,
        f"{gigabytes:.2f}",
        f"{result.requests:,}",
        "-" if math.isnan(result.broker_cpu) else per_gigabyte(result.broker_cpu),
        per_gigabyte(result.client_cpu),
        str(result.errors),
    ]


if __name__ == "__main__":
    main()
