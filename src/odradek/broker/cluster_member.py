"""A broker's side of the cluster (Kafka's BrokerLifecycleManager + BrokerMetadataListener).

Started only when `process.roles` includes `broker` and a controller is configured; a single
broker never builds one. It:

- registers with the controller on start (BrokerRegistration: a fresh incarnation id, the
  broker's listener, the features it supports) and gets its broker epoch;
- heartbeats every `broker.heartbeat.interval.ms` (BrokerHeartbeat: WantFence until it has
  replayed the metadata log up to the controller's end once; WantShutDown during a controlled
  shutdown, until the controller answers ShouldShutDown), and registers again when the
  controller no longer knows its epoch;
- fetches `__cluster_metadata`-0 from the controller (Fetch, long-polled) and replays the
  records into a `MetadataImage`, which Metadata and DescribeCluster answer from;
- creates the local logs of the topics the image assigns to this broker, and deletes those it
  no longer hosts (see `_reconcile_logs`);
- draws producer-id blocks with AllocateProducerIds (KIP-730) for its transaction coordinator:
  one after registering, then whenever the allocator asks (90 % of a block used, as Kafka's
  RPCProducerIdManager prefetches); it never makes up a block of its own.

The data plane (replica fetchers, ISR, high watermark, acks=all) is the `ReplicaManager`
(replica_manager.py) in `replicas`: `on_local_changes` hands it every batch's
`LocalReplicaChanges` (partitions now led, followed, deleted) once the local logs match the
image.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.broker.cluster_configs import apply_metadata_configs
from odradek.broker.config import SECURITY_PROTOCOLS, KraftSettings
from odradek.broker.context import CURRENT_LISTENER
from odradek.broker.kafka_channel import ChannelError, KafkaChannel
from odradek.broker.replica_manager import ReplicaManager
from odradek.broker.shutdown import bounded, cancel_and_wait
from odradek.controller import (
    ConfigResourceType,
    LocalReplicaChanges,
    MetadataDelta,
    MetadataImage,
    decode_record,
    kio_adapter,
)
from odradek.controller.feature_control import METADATA_VERSION_FEATURE, ODRADEK_METADATA_VERSION
from odradek.determinism import random_uuid
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import make, nested, request_module
from odradek.protocol.record_batch import decode_batches
from odradek.storage.metadata_log import METADATA_PARTITION, METADATA_TOPIC

if TYPE_CHECKING:
    from odradek.broker.context import BrokerContext

logger = logging.getLogger(__name__)

_FETCH_VERSION = 12
_FETCH_MAX_BYTES = 8 * 1024 * 1024
_FETCH_MAX_WAIT_MS = 500
_REGISTRATION_VERSION = 4
_HEARTBEAT_VERSION = 1


class ClusterMember:
    """This broker's registration, heartbeats and metadata image (see the module docstring)."""

    def __init__(self, context: BrokerContext, kraft: KraftSettings) -> None:
        self.context = context
        self.kraft = kraft
        self.node_id = context.node_id
        #: inter.broker.listener.name: what replica fetchers connect to on other brokers.
        self.listener_name = kraft.client_listener.name
        voter = kraft.voters[0]
        self.controller_address = (voter.host, voter.port)
        client_id = f"odradek-broker-{self.node_id}"
        self._rpc = KafkaChannel(voter.host, voter.port, client_id)
        self._fetch = KafkaChannel(voter.host, voter.port, client_id)
        self.incarnation_id = random_uuid()
        self.image = MetadataImage()
        self.broker_epoch = -1
        self.fenced = True
        #: Replayed up to the controller's end at least once (then WantFence is false).
        self.caught_up = False
        self.shutting_down = False
        self.should_shut_down = asyncio.Event()
        self._image_changed = asyncio.Event()
        self._registered = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._producer_ids_wanted = asyncio.Event()
        #: FindCoordinator's CreateTopics of an internal topic in flight, by name.
        self.internal_topic_creations: dict[str, asyncio.Task[None]] = {}
        context.transactions.on_producer_ids_wanted = self._producer_ids_wanted.set
        self.replicas = ReplicaManager(context, self)

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Start registration, heartbeats and the metadata fetcher (registration completes in
        the background: a controller that is down is waited for, as Kafka's broker does)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._fetch_loop()),
            loop.create_task(self._heartbeat_loop()),
            loop.create_task(self._producer_id_loop()),
        ]
        self.replicas.start()

    async def wait_until_registered(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._registered.wait()
        return self._registered.is_set()

    async def controlled_shutdown(self, timeout_s: float) -> bool:
        """Ask the controller to move this broker's leaderships away (WantShutDown) and wait
        for ShouldShutDown; False when the controller did not answer in time."""
        if not self._registered.is_set():
            return False
        self.shutting_down = True
        deadline = asyncio.get_running_loop().time() + timeout_s
        interval_s = min(self.kraft.heartbeat_interval_ms, 500) / 1000
        while not self.should_shut_down.is_set():
            try:
                await self._heartbeat()
            except ChannelError as error:
                logger.warning("controlled shutdown: controller unreachable: %s", error)
                return False
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                logger.warning("controlled shutdown: no ShouldShutDown from the controller")
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(interval_s, remaining)):
                    await self.should_shut_down.wait()
        logger.info("controlled shutdown: the controller released broker %d", self.node_id)
        return True

    async def stop(self) -> None:
        """Stop heartbeats, the metadata fetch and the data plane; each step bounded."""
        await cancel_and_wait(
            [*self._tasks, *self.internal_topic_creations.values()],
            "heartbeats and the metadata fetch",
        )
        self._tasks = []
        await bounded(self.replicas.stop(), "the replica manager")
        await self._rpc.close()
        await self._fetch.close()

    # -- registration and heartbeats -------------------------------------------------------

    async def _register(self) -> None:
        module = request_module(kio_adapter.BROKER_REGISTRATION, _REGISTRATION_VERSION)
        endpoints = self.context.listener_endpoints or {
            self.listener_name: (self.context.advertised_host, self.context.advertised_port)
        }
        listeners = tuple(
            make(
                nested(module, "Listener"),
                name=name,
                host=host,
                port=port,
                security_protocol=SECURITY_PROTOCOLS["PLAINTEXT"],
            )
            for name, (host, port) in endpoints.items()
        )
        feature = make(
            nested(module, "Feature"),
            name=METADATA_VERSION_FEATURE,
            min_supported_version=ODRADEK_METADATA_VERSION,
            max_supported_version=ODRADEK_METADATA_VERSION,
        )
        response = await self._rpc.request(
            kio_adapter.BROKER_REGISTRATION,
            _REGISTRATION_VERSION,
            broker_id=self.node_id,
            cluster_id=self.context.cluster_id,
            incarnation_id=self.incarnation_id,
            listeners=listeners,
            features=(feature,),
            rack=None,
            is_migrating_zk_broker=False,
            log_dirs=(),
            previous_broker_epoch=self.broker_epoch,
        )
        if response.error_code is not ErrorCode.none:
            logger.warning(
                "registration of broker %d refused: %s", self.node_id, response.error_code.name
            )
            return
        self.broker_epoch = int(response.broker_epoch)
        self.fenced = True
        self._registered.set()
        logger.info("broker %d registered, broker epoch %d", self.node_id, self.broker_epoch)
        self._producer_ids_wanted.set()

    async def _heartbeat(self) -> None:
        response = await self._rpc.request(
            kio_adapter.BROKER_HEARTBEAT,
            _HEARTBEAT_VERSION,
            broker_id=self.node_id,
            broker_epoch=self.broker_epoch,
            current_metadata_offset=self.image.offset,
            want_fence=not self.caught_up and not self.shutting_down,
            want_shut_down=self.shutting_down,
            offline_log_dirs=(),
        )
        if response.error_code in (
            ErrorCode.stale_broker_epoch,
            ErrorCode.broker_id_not_registered,
        ):
            logger.warning("controller: %s; registering again", response.error_code.name)
            self._registered.clear()
            return
        if response.error_code is not ErrorCode.none:
            logger.warning("heartbeat refused: %s", response.error_code.name)
            return
        if self.fenced != response.is_fenced:
            logger.info(
                "broker %d is now %s", self.node_id, "fenced" if response.is_fenced else "unfenced"
            )
        self.fenced = bool(response.is_fenced)
        serving = self.context.serving
        if not self.fenced and serving is not None and not serving.is_set():
            logger.info("broker %d serves requests (registered, caught up, unfenced)", self.node_id)
            serving.set()
        if response.should_shut_down:
            self.should_shut_down.set()

    async def _heartbeat_loop(self) -> None:
        interval_s = self.kraft.heartbeat_interval_ms / 1000
        while True:
            try:
                if not self._registered.is_set():
                    await self._register()
                    if not self._registered.is_set():
                        await asyncio.sleep(min(interval_s, 0.5))
                        continue
                elif not self.shutting_down:
                    await self._heartbeat()
            except ChannelError as error:
                logger.warning("controller unreachable: %s", error)
            await asyncio.sleep(interval_s)

    async def _producer_id_loop(self) -> None:
        """AllocateProducerIds whenever the allocator wants a block, until it has one."""
        producer_ids = self.context.transactions.producer_ids
        assert producer_ids is not None
        while True:
            await self._producer_ids_wanted.wait()
            self._producer_ids_wanted.clear()
            while producer_ids.wants_block():
                if not self._registered.is_set():
                    await self._registered.wait()
                try:
                    installed = await self._allocate_producer_ids()
                except ChannelError as error:
                    logger.warning("AllocateProducerIds: controller unreachable: %s", error)
                    installed = False
                if not installed:
                    await asyncio.sleep(0.2)

    async def _allocate_producer_ids(self) -> bool:
        response = await self._rpc.request(
            kio_adapter.ALLOCATE_PRODUCER_IDS,
            0,
            broker_id=self.node_id,
            broker_epoch=self.broker_epoch,
        )
        if response.error_code is not ErrorCode.none:
            logger.warning("AllocateProducerIds refused: %s", response.error_code.name)
            return False
        producer_ids = self.context.transactions.producer_ids
        assert producer_ids is not None
        producer_ids.install_block(int(response.producer_id_start), int(response.producer_id_len))
        logger.info("producer id block %d+%d", response.producer_id_start, response.producer_id_len)
        return True

    # -- the metadata log ------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        module = request_module(ApiKey.FETCH, _FETCH_VERSION)
        while True:
            partition = make(
                nested(module, "FetchPartition"),
                partition=METADATA_PARTITION,
                current_leader_epoch=-1,
                fetch_offset=self.image.offset + 1,
                last_fetched_epoch=-1,
                log_start_offset=-1,
                partition_max_bytes=_FETCH_MAX_BYTES,
            )
            try:
                response = await self._fetch.request(
                    ApiKey.FETCH,
                    _FETCH_VERSION,
                    timeout_s=_FETCH_MAX_WAIT_MS / 1000 + 10,
                    cluster_id=None,
                    replica_id=self.node_id,
                    max_wait=_FETCH_MAX_WAIT_MS,
                    min_bytes=1,
                    max_bytes=_FETCH_MAX_BYTES,
                    isolation_level=0,
                    session_id=0,
                    session_epoch=-1,
                    topics=(
                        make(
                            nested(module, "FetchTopic"),
                            topic=METADATA_TOPIC,
                            partitions=(partition,),
                        ),
                    ),
                    forgotten_topics_data=(),
                    rack_id="",
                )
            except ChannelError as error:
                logger.warning("metadata fetch failed: %s", error)
                await asyncio.sleep(0.5)
                continue
            data = response.responses[0].partitions[0]
            if data.error_code is not ErrorCode.none:
                logger.error("metadata fetch: %s", data.error_code.name)
                await asyncio.sleep(0.5)
                continue
            if data.records:
                await self._replay(bytes(data.records))
            if self.image.offset + 1 >= int(data.high_watermark) and not self.caught_up:
                self.caught_up = True
                logger.info("broker %d caught up with the metadata log", self.node_id)

    async def _replay(self, records: bytes) -> None:
        delta = MetadataDelta(self.image)
        replayed = False
        for _header, batch in decode_batches(records):
            for record in batch:
                if record.offset <= self.image.offset or record.value is None:
                    continue
                delta.replay(decode_record(record.value), record.offset)
                replayed = True
        if not replayed:
            return
        previous = self.image
        self.image = delta.apply()
        if previous.topics_by_id is not self.image.topics_by_id:
            await self._reconcile_logs()
        if (
            previous.configs is not self.image.configs
            or previous.topics_by_id is not self.image.topics_by_id
        ):
            apply_metadata_configs(self.context, previous.configs, self.image.configs)
            self.replicas.refresh_min_insync()
        self.on_local_changes(delta.local_changes(self.node_id), previous)
        self._image_changed.set()
        self._image_changed = asyncio.Event()

    def on_local_changes(self, changes: LocalReplicaChanges, previous: MetadataImage) -> None:
        """The data plane's seam: partitions this broker now leads, follows, or must delete
        (the replica manager becomes leader / follower with the new epochs)."""
        if changes.leaders or changes.followers or changes.deletes:
            logger.debug(
                "broker %d: leads %d, follows %d, deletes %d partitions",
                self.node_id,
                len(changes.leaders),
                len(changes.followers),
                len(changes.deletes),
            )
        self.replicas.apply_local_changes(changes, self.image, previous)

    async def _reconcile_logs(self) -> None:
        """Make the local logs match the image: a topic with a replica here exists locally
        under the controller's topic id with every partition; one without is deleted.

        LogManager keeps a topic's partitions together, so a broker hosting one replica of a
        topic holds empty logs for the others until the data plane narrows this."""
        logs = self.context.logs
        image = self.image
        hosted: dict[str, tuple[uuid.UUID, int]] = {}
        for topic in image.topics_by_id.values():
            if any(self.node_id in p.replicas for p in topic.partitions.values()):
                hosted[topic.name] = (topic.topic_id, max(topic.partitions, default=-1) + 1)
        local = logs.topics()
        for name, metadata in list(local.items()):
            wanted = hosted.get(name)
            if wanted is None or wanted[0] != metadata.topic_id:
                await self._delete_local(name, metadata.partitions)
        local = logs.topics()
        for name, (topic_id, partitions) in hosted.items():
            existing = local.get(name)
            configs = dict(image.configs.get((ConfigResourceType.TOPIC, name), {}))
            try:
                if existing is None:
                    logs.create_topic(name, partitions, configs, topic_id=topic_id)
                    logger.info("created local logs of %s (%d partitions)", name, partitions)
                elif existing.partitions < partitions:
                    logs.create_partitions(name, partitions)
            except Exception:  # a bad log must not stop metadata replay
                logger.exception("cannot create the local logs of %s", name)

    async def _delete_local(self, name: str, partitions: int) -> None:
        self.replicas.forget_topic(name)
        self.context.logs.delete_topic(name)
        self.context.forget_partitions(name)
        await self.context.groups.partitions_deleted([(name, index) for index in range(partitions)])
        logger.info("deleted local logs of %s", name)

    # -- what handlers use -----------------------------------------------------------------

    async def forward(self, api_key: int, version: int, request: Any) -> Any:
        """Send an admin request to the controller as it came (Kafka wraps it in Envelope)."""
        return await self._rpc.send(request, api_key, version, timeout_s=30)

    async def wait_for_topics(self, names: Iterable[str], present: bool, timeout_s: float) -> None:
        """Until the image has (or no longer has) every topic in `names`, at most timeout_s."""
        wanted = set(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            known = wanted & set(self.image.topics_by_name)
            if (known == wanted) if present else not known:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._image_changed.wait()

    def client_listener_name(self) -> str:
        """The listener the current request came in on (Kafka answers Metadata per listener);
        the inter-broker listener outside a request."""
        return CURRENT_LISTENER.get() or self.listener_name

    def next_image(self) -> Coroutine[Any, Any, bool]:
        """Completes when the next metadata batch has been applied to the image."""
        return self._image_changed.wait()

    def controller_id_for_clients(self) -> int:
        """The controller id a broker reports in Metadata and DescribeCluster: in KRaft the
        controller is not reachable by clients, so Kafka reports an alive broker instead
        (KafkaApis: getRandomAliveBrokerId); Odradek picks the lowest, for stable answers."""
        alive = self.image.alive_brokers()
        return alive[0].broker_id if alive else -1
