"""The broker process: listener, connections, background duties, start and clean stop.

`Broker` is also the embedding API: an async and a sync context manager that starts a broker
on an ephemeral port (in a temporary directory unless one is given).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from odradek.broker import dispatcher
from odradek.broker.clock import now_ms
from odradek.broker.cluster_configs import MetadataConfigView
from odradek.broker.config import BrokerConfig, ConfigError
from odradek.broker.connection import KafkaConnection
from odradek.broker.context import BrokerContext, default_log_config
from odradek.broker.dynamic_configs import load_group_configs, open_dynamic_configs
from odradek.broker.shutdown import bounded, cancel_and_wait, wait_finished
from odradek.determinism import random_uuid
from odradek.storage.config_store import ConfigStore
from odradek.storage.lazy_files import SegmentFiles, files_for_mode
from odradek.storage.log_manager import LogManager

logger = logging.getLogger(__name__)

#: At most this long (seconds) for closing the logs on stop; past it the process goes on
#: exiting and the next start recovers the logs left unclosed, as after a crash.
_CLOSE_LOGS_TIMEOUT_S = 5.0

META_PROPERTIES = "meta.properties"


def new_cluster_id() -> str:
    """Kafka's format: a random UUID, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(random_uuid().bytes).decode().rstrip("=")


def load_or_create_cluster_id(log_dir: Path, configured: str, node_id: int) -> str:
    """The cluster id lives in `meta.properties` in the log directory, as in Kafka."""
    path = log_dir / META_PROPERTIES
    if path.exists():
        properties = dict(
            line.split("=", 1)
            for line in path.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        stored = properties.get("cluster.id", "")
        if configured and stored and configured != stored:
            raise RuntimeError(
                f"cluster.id {configured!r} does not match {stored!r} stored in {path}"
            )
        if stored:
            return stored
    cluster_id = configured or new_cluster_id()
    temporary = path.with_suffix(".tmp")
    temporary.write_text(
        f"#Written by Odradek\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"
    )
    temporary.replace(path)
    return cluster_id


class Broker:
    """A running Odradek broker.

    >>> async with Broker() as broker:            # doctest: +SKIP
    ...     producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    """

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        config: Mapping[str, str] | None = None,
        files: SegmentFiles | None = None,
    ) -> None:
        # The file layer for segment logs; None: the one `odradek.storage.mode` names. The
        # simulator passes its simulated disk here.
        self._files = files
        self._temporary_dir: Path | None = None
        if data_dir is None:
            self._temporary_dir = Path(tempfile.mkdtemp(prefix="odradek-"))
            data_dir = self._temporary_dir
        properties = {
            "listeners": f"PLAINTEXT://{host}:{port}",
            "log.dirs": str(data_dir),
            **(config or {}),
        }
        self.config = BrokerConfig.from_properties(properties)
        self.context: BrokerContext | None = None
        self._server: asyncio.Server | None = None
        #: A cluster broker's listeners besides `listener` (named listeners).
        self._other_servers: list[asyncio.Server] = []
        self._connections: set[KafkaConnection] = set()
        # Free large-frame buffers shared by every connection (connection.POOLED_FRAMES).
        self._free_frame_buffers: list[bytearray] = []
        self._background: list[asyncio.Task[None]] = []
        self._flushing: asyncio.Future[int] | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        kraft = self.config.kraft
        if kraft is not None and not kraft.is_broker:
            raise ConfigError("process.roles has no broker role: run a ControllerServer instead")

    @property
    def host(self) -> str:
        return self.config.advertised_listener.host

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        dispatcher.load_handlers()
        config = self.config
        config.log_dir.mkdir(parents=True, exist_ok=True)
        if (
            config.kraft is not None
            and not config.cluster_id
            and not (config.log_dir / META_PROPERTIES).exists()
        ):
            raise ConfigError(
                "cluster.id must be set on a broker of a cluster (the controller's cluster id, "
                "as `kafka-storage format --cluster-id` writes it)"
            )
        cluster_id = load_or_create_cluster_id(config.log_dir, config.cluster_id, config.node_id)
        for name in config.unknown:
            logger.warning("unknown property %s is ignored", name)
        if config.storage_mode != "os":
            logger.warning(
                "odradek.storage.mode=%s: a kill loses every log byte not fsynced (power-loss "
                "model, for testing)",
                config.storage_mode,
            )
        static_config = config
        config_store: ConfigStore
        if config.kraft is None:
            config_store, config = open_dynamic_configs(static_config)
        else:
            # A cluster member's dynamic configs are ConfigRecords of the metadata log.
            config_store = MetadataConfigView()
        logs = LogManager.open(
            config.log_dir,
            default_log_config(config),
            now_ms(),
            self._files if self._files is not None else files_for_mode(config.storage_mode),
        )
        if config.kraft is None:
            for log in logs.all_logs().values():
                # One node: the in-sync replica set is the leader alone, so everything the log
                # holds after recovery is replicated "everywhere" (a checkpointed HW may lag
                # after kill -9). On a cluster the HW stays at its checkpoint: a replica learns
                # it again from the leader, and a new leader only advances it as followers catch
                # up, so an unreplicated tail is never shown to consumers (Kafka's behaviour).
                log.high_watermark = log.log_end_offset
        loop = asyncio.get_running_loop()
        listener = config.listener
        self.context = BrokerContext(
            config=config,
            logs=logs,
            cluster_id=cluster_id,
            advertised_host=config.advertised_listener.host,
            advertised_port=config.advertised_listener.port,
            static_config=static_config,
            config_store=config_store,
        )
        context = self.context
        context.groups.load(now_ms())
        load_group_configs(context)
        context.groups.start()
        context.transactions.load(now_ms())
        context.transactions.start()
        listener_name = listener.name if config.kraft is not None else None
        if config.kraft is not None:
            context.serving = asyncio.Event()
        self._server = await loop.create_server(
            lambda: KafkaConnection(
                context, self._connections, listener_name, self._free_frame_buffers
            ),
            host=listener.host,
            port=listener.port,
            reuse_address=True,
            backlog=1024,
        )
        socket = self._server.sockets[0]
        self.port = socket.getsockname()[1]
        if config.advertised_listener.port == 0 or (
            config.advertised_listener == config.listener and listener.port == 0
        ):
            context.advertised_port = self.port
        if config.kraft is not None:
            await self._open_other_listeners(context)
        if config.kraft is not None:
            await self._join_cluster(context)
        self._background = [
            loop.create_task(self._retention_loop()),
            loop.create_task(self._flush_loop()),
            loop.create_task(self._cleaner_loop()),
        ]
        logger.info(
            "Odradek broker %d (cluster %s) listening on %s:%d, data in %s",
            config.node_id,
            cluster_id,
            listener.host,
            self.port,
            config.log_dir,
        )

    async def _open_other_listeners(self, context: BrokerContext) -> None:
        """A cluster broker listens on each of its listeners (Kafka's named listeners, e.g.
        CLIENT and REPLICATION); every one is registered with the controller, and Metadata
        asked on one answers with that listener's endpoints."""
        config = self.config
        assert config.kraft is not None
        loop = asyncio.get_running_loop()
        advertised = {item.name: item for item in config.advertised_broker_listeners}
        context.listener_endpoints[config.listener.name] = (
            context.advertised_host,
            context.advertised_port,
        )
        for listener in config.kraft.listeners:
            if listener.name in config.kraft.controller_listener_names:
                continue
            if listener.name == config.listener.name:
                continue
            name = listener.name
            server = await loop.create_server(
                lambda name=name: KafkaConnection(  # type: ignore[misc]
                    context, self._connections, name, self._free_frame_buffers
                ),
                host=listener.host,
                port=listener.port,
                reuse_address=True,
                backlog=1024,
            )
            self._other_servers.append(server)
            port = server.sockets[0].getsockname()[1]
            shown = advertised.get(name, listener)
            context.listener_endpoints[name] = (shown.host, shown.port or port)
            logger.info("listener %s on %s:%d", name, listener.host, port)

    async def _join_cluster(self, context: BrokerContext) -> None:
        """Register with the controller and follow its metadata log (process.roles set)."""
        from odradek.broker.cluster_member import ClusterMember

        assert self.config.kraft is not None
        context.cluster = ClusterMember(context, self.config.kraft)
        await context.cluster.start()

    async def controlled_shutdown(self, timeout_s: float = 30.0) -> bool:
        """Kafka's controlled shutdown before `stop()`: the controller moves this broker's
        leaderships away first (WantShutDown / ShouldShutDown). True at once alone."""
        if self.context is None or self.context.cluster is None:
            return True
        return await self.context.cluster.controlled_shutdown(timeout_s)

    async def _retention_loop(self) -> None:
        interval = max(self.config.log_retention_check_interval_ms, 10) / 1000
        while True:
            await asyncio.sleep(interval)
            if self.context is not None:
                try:
                    self.context.logs.enforce_retention(now_ms())
                except OSError as error:
                    logger.error("retention check failed: %s", error)

    async def _cleaner_loop(self) -> None:
        """Compact `cleanup.policy=compact` logs (Kafka's log cleaner, on the event loop).

        Cleaning swaps segments under the log, so it runs on the loop thread between requests
        rather than beside appends; it only ever rewrites inactive segments.
        """
        if self.config.properties.get("log.cleaner.enable", "true").lower() != "true":
            return
        while True:
            # log.cleaner.backoff.ms is a dynamic broker config: read it every round.
            config = self.context.config if self.context is not None else self.config
            interval = max(int(config.properties.get("log.cleaner.backoff.ms", "15000")), 10)
            await asyncio.sleep(interval / 1000)
            if self.context is None:
                continue
            try:
                cleaned = self.context.logs.clean(now_ms())
            except OSError as error:
                logger.error("log cleaning failed: %s", error)
                continue
            for topic_partition, result in cleaned.items():
                logger.info(
                    "cleaned %s: %d -> %d bytes",
                    topic_partition,
                    result.bytes_before,
                    result.bytes_after,
                )

    async def _flush_loop(self) -> None:
        """Honour flush.ms: fsync logs whose oldest unflushed append is older than it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.1)
            if self.context is None:
                continue
            due = self.context.logs.logs_due_for_flush(now_ms())
            for log in due:
                try:
                    # Shielded: a stop waits for this fdatasync rather than closing the log
                    # under it (cancelling the task would not stop the thread).
                    self._flushing = loop.run_in_executor(None, log.flush)
                    await asyncio.shield(self._flushing)
                except OSError as error:
                    logger.error("scheduled flush failed: %s", error)

    async def stop(self) -> None:
        """Stop serving and close the logs. Every step is bounded (shutdown.py): a step that
        runs over its few seconds is logged by name and left behind, so a stop always ends."""
        await cancel_and_wait(self._background, "retention, flush and cleaner loops")
        self._background = []
        for server in self._other_servers:
            server.close()
        self._other_servers = []
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.close("broker shutting down")
            await bounded(self._server.wait_closed(), "closing the listener", 2.0)
            self._server = None
        context = self.context
        if context is not None:
            if context.cluster is not None:
                await bounded(
                    context.cluster.stop(),
                    "the cluster member (heartbeats, metadata fetch, replica fetchers)",
                )
            await bounded(context.transactions.stop(), "the transaction coordinator")
            await bounded(context.groups.stop(), "the group coordinator")
            # fdatasyncs in flight run in threads: let them end before closing their files.
            flushes: list[asyncio.Future[Any]] = [*context.flushes_in_flight()]
            if self._flushing is not None:
                flushes.append(self._flushing)
            await wait_finished(flushes, "fdatasyncs in flight")
            await bounded(
                _in_thread(context.logs.close, "odradek-close-logs"),
                "closing the logs (fdatasync, checkpoints)",
                _CLOSE_LOGS_TIMEOUT_S,
            )
            self.context = None
        if self._temporary_dir is not None:
            shutil.rmtree(self._temporary_dir, ignore_errors=True)
        logger.info("broker stopped cleanly")

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # Sync embedding: the broker runs on its own event loop in a daemon thread.
    def __enter__(self) -> Broker:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = new_event_loop()
            self._thread_loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as error:
                failure.append(error)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="odradek-broker", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._thread_loop is not None and self._thread is not None:
            self._thread_loop.call_soon_threadsafe(self._thread_loop.stop)
            self._thread.join(timeout=30)
            self._thread_loop = None
            self._thread = None


async def _in_thread(function: Callable[[], None], name: str) -> None:
    """Run `function` on a thread of its own (a daemon: one stuck in the kernel, as an
    fdatasync on a failing disk can be, never holds the process at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        outcome: BaseException | None = None
        try:
            function()
        except BaseException as error:  # handed to the awaiting task
            outcome = error
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, done, outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    await done


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
