"""Odradek: Kafka's delivery guarantees, built for real.

`odradek.Broker` starts a Kafka-wire-compatible broker in-process (see `odradek.broker.server`);
`odradek.Cluster` / `odradek.AsyncCluster` run a controller and N brokers as processes (see
`odradek.cluster`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["AsyncCluster", "Broker", "Cluster", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from odradek.broker.server import Broker
    from odradek.cluster import AsyncCluster, Cluster


def __getattr__(name: str) -> Any:
    # Lazy, so `import odradek` stays cheap for the CLI and the toolkit.
    if name == "Broker":
        from odradek.broker.server import Broker

        return Broker
    if name in ("Cluster", "AsyncCluster"):
        from odradek import cluster

        return getattr(cluster, name)
    raise AttributeError(name)
