"""The simulator's parts on their own: virtual time, the network's order and faults, the disk's
power-loss model, the memory file system behind storage."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from odradek.protocol.record_batch import Record, encode_batch, validate_batches
from odradek.sim.disk import SimFiles
from odradek.sim.loop import SimLoop, run_in_node
from odradek.sim.memfs import MemoryFileSystem, SimPath, patched_storage
from odradek.sim.network import LatencyModel, SimNetwork
from odradek.sim.trace import Trace
from odradek.storage import _files
from odradek.storage.log import LogConfig, PartitionLog
from odradek.storage.log_manager import LogManager


def test_virtual_time_jumps_to_the_next_timer() -> None:
    loop = SimLoop(random.Random(1))
    order: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        order.append(f"{name}@{loop.time():.3f}")

    async def main() -> None:
        await asyncio.gather(sleeper("late", 3600), sleeper("early", 5))

    loop.run_until_complete(main())
    loop.close()
    assert order == ["early@5.000", "late@3600.000"]


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: list[Exception | None] = []

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def _network(seed: int) -> tuple[SimLoop, SimNetwork]:
    loop = SimLoop(random.Random(seed))
    network = SimNetwork(loop, random.Random(seed), Trace(loop.time), LatencyModel())
    return loop, network


def test_bytes_on_one_connection_arrive_in_order_and_a_cut_holds_them_back() -> None:
    loop, network = _network(2)
    server_side: list[_Recorder] = []

    def accept() -> _Recorder:
        server_side.append(_Recorder())
        return server_side[-1]

    async def main() -> float:
        await run_in_node("server", loop.create_server(accept, "server", 9000))
        transport, _protocol = await run_in_node(
            "client", loop.create_connection(_Recorder, "server", 9000)
        )
        for index in range(200):
            transport.write(b"%d," % index)
        await asyncio.sleep(1)
        network.cut("client", "server", 10.0)
        transport.write(b"after-cut")
        await asyncio.sleep(5)
        held_back = bytes(server_side[0].received).endswith(b"after-cut")
        await asyncio.sleep(6)
        assert not held_back
        return loop.time()

    loop.run_until_complete(main())
    loop.close()
    expected = b"".join(b"%d," % index for index in range(200)) + b"after-cut"
    assert bytes(server_side[0].received) == expected


def test_a_reset_loses_bytes_in_flight_and_tells_both_ends() -> None:
    loop, network = _network(3)
    server_side: list[_Recorder] = []

    def accept() -> _Recorder:
        server_side.append(_Recorder())
        return server_side[-1]

    async def main() -> _Recorder:
        await run_in_node("server", loop.create_server(accept, "server", 9000))
        transport, protocol = await run_in_node(
            "client", loop.create_connection(_Recorder, "server", 9000)
        )
        transport.write(b"lost")
        (connection,) = network.connections.values()
        network.reset(connection, "test")
        await asyncio.sleep(1)
        assert isinstance(protocol, _Recorder)
        return protocol

    client = loop.run_until_complete(main())
    loop.close()
    assert server_side[0].received == b""
    assert isinstance(server_side[0].lost[0], ConnectionResetError)
    assert isinstance(client.lost[0], ConnectionResetError)


def _fs_with_segment(power_loss: bool) -> tuple[bytes, bytes]:
    fs = MemoryFileSystem()
    fs.mkdir("/sim", parents=True)
    files = SimFiles(fs, random.Random(4))
    path = SimPath("/sim/segment.log")
    fd = files.open(path, 0o100 | 0o2)  # O_CREAT | O_RDWR
    files.write(fd, b"synced")
    files.fdatasync(fd)
    files.writev(fd, [b"-pending", b"-tail"])
    assert files.pread(fd, 100, 0) == b"synced-pending-tail"
    files.crash(power_loss)
    with pytest.raises(OSError, match="crashed"):
        files.pread(fd, 1, 0)
    return fs.read("/sim/segment.log"), b"synced-pending-tail"


def test_a_process_crash_keeps_unsynced_bytes() -> None:
    on_disk, written = _fs_with_segment(power_loss=False)
    assert on_disk == written


def test_a_power_loss_drops_unsynced_bytes_or_tears_the_last_write() -> None:
    outcomes = set()
    for seed in range(20):
        fs = MemoryFileSystem()
        fs.mkdir("/sim")
        files = SimFiles(fs, random.Random(seed))
        fd = files.open(SimPath("/sim/segment.log"), 0o100 | 0o2)
        files.write(fd, b"synced")
        files.fdatasync(fd)
        files.write(fd, b"-pending")
        files.crash(power_loss=True)
        on_disk = fs.read("/sim/segment.log")
        assert on_disk.startswith(b"synced")
        assert b"synced-pending".startswith(on_disk)
        outcomes.add(len(on_disk))
    assert 6 in outcomes  # all unsynced bytes lost
    assert len(outcomes) > 2  # and torn at several points


def test_storage_runs_on_the_memory_file_system_and_recovers_after_a_power_loss() -> None:
    fs = MemoryFileSystem()
    with patched_storage(fs):
        directory = SimPath("/sim/node/topic-0")
        files = SimFiles(fs, random.Random(5))
        log = PartitionLog.open(directory, LogConfig(), 0, files)
        for index in range(3):
            batch = encode_batch([Record(key=None, value=b"v%d" % index)])
            log.append(batch, validate_batches(batch, 1 << 20), 0, 0)
            if index == 1:
                log.flush()
        files.crash(power_loss=True)
        recovered = PartitionLog.open(directory, LogConfig(), 0, SimFiles(fs, random.Random(5)))
        # The two flushed batches survive; the unsynced third is gone (or torn and cut off).
        assert recovered.log_end_offset == 2
        _files.write_file_atomically(SimPath("/sim/node/x"), b"data")
        assert fs.read("/sim/node/x") == b"data"
        other = SimPath("/sim/other")
        manager = LogManager.open(other, LogConfig(), 0, SimFiles(fs, random.Random(6)))
        manager.create_topic("t", 2, {})
        assert {"t-0", "t-1"} <= set(fs.listdir("/sim/other"))
    assert not os.path.exists("/sim")  # nothing reached the real file system
