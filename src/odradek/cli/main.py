"""The `odradek` command: click wiring only; the work lives in the layers below."""

from __future__ import annotations

import click

from odradek import __version__
from odradek.cli.check import check
from odradek.cli.cluster import cluster
from odradek.cli.consume import consume
from odradek.cli.group import group
from odradek.cli.produce import produce
from odradek.cli.serve import serve
from odradek.cli.sim import sim
from odradek.cli.topic import topic
from odradek.cli.txn import producers, txn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="odradek")
def cli() -> None:
    """Odradek: Kafka's delivery guarantees, built for real."""


cli.add_command(serve)
cli.add_command(cluster)
cli.add_command(topic)
cli.add_command(produce)
cli.add_command(consume)
cli.add_command(check)
cli.add_command(group)
cli.add_command(txn)
cli.add_command(producers)
cli.add_command(sim)


def main() -> None:
    cli()
