"""`odradek serve`: run a broker until SIGTERM or Ctrl-C.

On SIGTERM a cluster member first hands its leaderships over (controlled shutdown, bounded by
`broker.session.timeout.ms`), then stops; every step of the stop is bounded
(`odradek.broker.shutdown`), tasks left running are cancelled, and worker threads get
`_THREAD_EXIT_TIMEOUT_S` to finish: one still stuck (an fdatasync on a dying disk) is named in
the log and the process exits anyway (the next start recovers the logs as after a crash). As a
last resort a watchdog dumps every thread's stack and exits with status 1 if the stop has not
ended `_STOP_DEADLINE_S` seconds after the controlled shutdown.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from odradek.broker.config import BrokerConfig, ConfigError, parse_properties
from odradek.broker.controller_server import ControllerServer
from odradek.broker.purgatory import shutdown_flusher
from odradek.broker.server import Broker, load_or_create_cluster_id, new_event_loop
from odradek.broker.shutdown import cancel_and_wait

logger = logging.getLogger(__name__)

#: How long (seconds) worker threads may run on after the event loop closed.
_THREAD_EXIT_TIMEOUT_S = 3.0
#: The watchdog: the stop after the controlled shutdown ends within this many seconds.
_STOP_DEADLINE_S = 30


def _overrides(values: tuple[str, ...]) -> dict[str, str]:
    parsed = {}
    for value in values:
        if "=" not in value:
            raise click.BadParameter(f"{value!r} is not key=value", param_hint="--override")
        key, _, item = value.partition("=")
        parsed[key.strip()] = item.strip()
    return parsed


@click.command()
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 9092).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="log.dirs")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A server.properties file (Kafka's property names).",
)
@click.option(
    "--override", "override", multiple=True, metavar="KEY=VALUE", help="Set one property."
)
@click.option("--log-level", default="INFO", show_default=True)
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    config_file: Path | None,
    override: tuple[str, ...],
    log_level: str,
) -> None:
    """Run a Kafka-compatible broker."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        properties = parse_properties(config_file.read_text()) if config_file else {}
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    properties.update(_overrides(override))
    listeners = properties.get("listeners", "PLAINTEXT://127.0.0.1:9092")
    if (host is not None or port is not None) and "," in listeners:
        raise click.ClickException("--host/--port need a single listener; set listeners instead")
    if host is not None or port is not None:
        current_host, _, current_port = listeners.split("://", 1)[-1].rpartition(":")
        name = listeners.split("://", 1)[0] if "://" in listeners else "PLAINTEXT"
        listeners = f"{name}://{host or current_host}:{port if port is not None else current_port}"
    properties["listeners"] = listeners
    if data_dir is not None:
        properties["log.dirs"] = str(data_dir)
    properties.setdefault("log.dirs", "./data")
    try:
        config = BrokerConfig.from_properties(properties)
        kraft = config.kraft
        broker = (
            Broker(data_dir=properties["log.dirs"], config=properties)
            if kraft is None or kraft.is_broker
            else None
        )
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    controller = None
    if kraft is not None and kraft.is_controller:
        # broker,controller: the controller keeps its metadata log beside the broker's logs.
        config.log_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = load_or_create_cluster_id(config.log_dir, config.cluster_id, config.node_id)
        controller = ControllerServer(config, cluster_id)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    started = asyncio.Event()

    async def run() -> None:
        if controller is not None:
            await controller.start()
            click.echo(
                f"Odradek controller {config.node_id} is listening on "
                f"{controller.listener.host}:{controller.port}",
                err=broker is not None,
            )
        if broker is not None:
            await broker.start()
            click.echo(
                f"Odradek is listening. Connect with bootstrap.servers="
                f"{broker.bootstrap_servers}\n  e.g. kcat -b {broker.bootstrap_servers} -L"
            )
        started.set()
        await stop.wait()
        if broker is not None:
            # A cluster member first hands its leaderships over (controlled shutdown).
            if kraft is not None:
                released = await broker.controlled_shutdown(kraft.session_timeout_ms / 1000)
                click.echo(
                    "Controlled shutdown complete: the controller moved this broker's leaderships."
                    if released
                    else "Controlled shutdown did not complete: the controller did not answer.",
                    err=True,
                )
            # Every step below is bounded; the watchdog catches what is not.
            faulthandler.dump_traceback_later(_STOP_DEADLINE_S, exit=True)
            await broker.stop()
        if controller is not None:
            faulthandler.dump_traceback_later(_STOP_DEADLINE_S, exit=True)
            await controller.stop()
        await cancel_and_wait(
            [task for task in asyncio.all_tasks() if task is not asyncio.current_task()],
            "tasks left running at exit",
        )

    async def run_or_explain() -> str | None:
        """run(); a start that fails on a setting or a busy port becomes a message (the CLI
        prints it, no traceback) once whatever had started is cancelled."""
        try:
            await run()
        except (ConfigError, OSError) as error:
            if started.is_set():
                raise
            await cancel_and_wait(
                [task for task in asyncio.all_tasks() if task is not asyncio.current_task()],
                "tasks left running after a failed start",
            )
            return str(error)
        return None

    try:
        failure = loop.run_until_complete(run_or_explain())
    finally:
        loop.close()
    if failure is not None:
        shutdown_flusher()
        raise click.ClickException(failure)
    _exit_when_threads_linger()


def _exit_when_threads_linger() -> None:
    """Let worker threads (fdatasync pools, the default executor) finish for at most
    `_THREAD_EXIT_TIMEOUT_S`; if one is still running, log its name and end the process now,
    status 0 (the interpreter would otherwise wait for it at exit, however long)."""
    shutdown_flusher()
    deadline = time.monotonic() + _THREAD_EXIT_TIMEOUT_S
    lingering = []
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(deadline - time.monotonic(), 0))
        if thread.is_alive():
            lingering.append(thread.name)
    faulthandler.cancel_dump_traceback_later()
    if lingering:
        logger.warning(
            "shutdown: thread(s) still running after %.1f s: %s; exiting without them",
            _THREAD_EXIT_TIMEOUT_S,
            ", ".join(lingering),
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
