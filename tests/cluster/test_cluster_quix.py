"""Quix Streams — a public stream-processing framework on confluent-kafka that Odradek does not
control — keeps an exactly-once count per key while a broker is killed (a controller and three
brokers, RF=3, min.insync.replicas=2).

The application (tests/cluster/quix_count_app.py) runs with the interpreter of `.venv-quix`
(`make quix-venv`, run by `make test`: quixstreams needs an older confluent-kafka than the
project pins) as a process that is started again if it exits, as a supervisor would. It counts
records per key with processing_guarantee="exactly-once" (output, state changelog and offsets in
one transaction). Half the input is there when it starts; while it works through it the leader of
the input partition is killed with SIGKILL, the other half is produced, and the broker restarts.
A read_committed reader of the output must see, per key, exactly 1, 2, ..., n where n is the
number of records of that key in the input.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import (
    consume_messages,
    create_replicated_topic,
    group_committed_offset,
    produce_values,
    wait_until,
)

from odradek.cluster import Cluster

REPOSITORY = Path(__file__).resolve().parent.parent.parent
QUIX_PYTHON = REPOSITORY / ".venv-quix" / "bin" / "python"
APP = Path(__file__).parent / "quix_count_app.py"
COUNT = 1600
KEYS = 7
DELAY_MS = "3"
#: No committed progress for this long with input left: the app is restarted.
STALL_SECONDS = 15.0

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def quix_python() -> Path:
    if not QUIX_PYTHON.exists():
        pytest.skip(".venv-quix was not built (`make quix-venv` installs quixstreams there)")
    probe = subprocess.run(
        [str(QUIX_PYTHON), "-c", "import quixstreams"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"quixstreams does not import in .venv-quix: {probe.stderr.decode()[-300:]}")
    return QUIX_PYTHON


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(
        brokers=3,
        data_dir=tmp_path_factory.mktemp("quix"),
        log_level="INFO",
        config={
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "replica.lag.time.max.ms": "1500",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.num.partitions": "3",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
        },
    ) as running:
        yield running


def key_of(index: int) -> str:
    return f"key-{(index * index) % KEYS}"  # uneven counts per key


def test_quix_exactly_once_count_stays_exact_when_the_input_leader_is_killed(
    cluster: Cluster, quix_python: Path, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    source, target, group = f"quix-in-{suffix}", f"quix-out-{suffix}", f"quix-{suffix}"
    for name in (source, target):
        create_replicated_topic(cluster, name, 1)
        cluster.wait_for_isr(name, 0, 3)
    produced = [(key_of(i), b"%d" % i) for i in range(COUNT)]
    half = COUNT // 2

    produce_values(cluster, source, produced[:half])
    stderr = tmp_path / "quix.stderr"
    command = [
        str(quix_python),
        str(APP),
        cluster.bootstrap_servers,
        source,
        target,
        group,
        str(tmp_path / "state"),
        DELAY_MS,
    ]
    exits: list[int] = []

    def start() -> subprocess.Popen[bytes]:
        with stderr.open("ab") as errors:
            return subprocess.Popen(
                command,
                stdout=errors,
                stderr=errors,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=tmp_path,
            )

    app = start()

    stalls: list[int] = []
    last = [-1, time.monotonic()]

    def supervise(offset: int) -> None:
        """Start the app again if it exited, or (a liveness probe) if its committed offset
        stayed put for STALL_SECONDS with input left: librdkafka's send_offsets_to_transaction
        hangs when the group coordinator was a killed broker that left the Metadata broker
        list (confluentinc/librdkafka#5511), and Quix calls it on every commit."""
        nonlocal app
        now = time.monotonic()
        if offset != last[0] or offset >= COUNT:
            last[:] = [offset, now]
        elif now - last[1] > STALL_SECONDS:
            stalls.append(offset)
            app.kill()
            app.wait()
            last[:] = [offset, now]
        code = app.poll()
        if code is not None:
            exits.append(code)
            app = start()

    def committed() -> int:
        offset = group_committed_offset(cluster, group, source)
        supervise(offset)
        return offset

    try:
        wait_until(lambda: committed() >= 100, timeout_s=120, message="the count under way")
        leader = cluster.leader_of(source, 0)
        assert leader is not None
        cluster.kill(leader)
        at_kill = committed()
        produce_values(cluster, source, produced[half:])
        cluster.wait_for_brokers([n for n in cluster.node_ids if n != leader], timeout_s=30)
        cluster.restart(leader)
        cluster.wait_for_brokers(cluster.node_ids, timeout_s=40)
        assert at_kill < half, f"the first half was counted before the kill ({at_kill})"
        wait_until(
            lambda: committed() == COUNT,
            timeout_s=150,
            message=f"every record counted (exits: {exits}, stalls {stalls}; see {stderr.name})",
        )
    finally:
        if app.poll() is None:
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(timeout=30)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()

    truth = collections.Counter(
        (message.key() or b"").decode()
        for message in consume_messages(
            cluster, source, until=lambda messages: len(messages) >= COUNT, timeout_s=20, poll_s=0.5
        )
    )
    assert truth == collections.Counter(key for key, _value in produced)
    counts: dict[str, list[int]] = collections.defaultdict(list)
    for message in consume_messages(
        cluster,
        target,
        until=lambda messages: len(messages) > COUNT,
        timeout_s=10,
        poll_s=0.5,
        **{"isolation.level": "read_committed"},
    ):
        counts[(message.key() or b"").decode()].append(json.loads(message.value() or b"null"))
    wrong = {
        key: (values[:5], len(values), truth[key])
        for key, values in counts.items()
        if values != list(range(1, truth[key] + 1))
    }
    assert set(counts) == set(truth)
    assert wrong == {}, f"per key: (first counts, emitted, true count); exits {exits}"
    print(f"quix: killed broker {leader} at offset {at_kill}; exits {exits}, stalls {stalls}")
