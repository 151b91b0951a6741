"""DescribeCluster: the cluster id, the controller and the one broker (never fenced, so v2's
`include_fenced_brokers` changes nothing and `is_fenced` is false)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from odradek.broker import cluster_handlers, dispatcher
from odradek.broker.authorized_operations import cluster_operations
from odradek.broker.context import BrokerContext
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import RequestHeader, make, nested, response_module, response_type

BROKERS_ENDPOINT_TYPE = 1


@dispatcher.register(ApiKey.DESCRIBE_CLUSTER, 0, 2)
async def handle(context: BrokerContext, header: RequestHeader, request: Any) -> Any:
    if context.cluster is not None:  # a cluster member: the controller decides
        return await cluster_handlers.describe_cluster(context, header, request)
    version = header.api_version
    endpoint_type = getattr(request, "endpoint_type", BROKERS_ENDPOINT_TYPE)
    broker = make(
        nested(response_module(ApiKey.DESCRIBE_CLUSTER, version), "DescribeClusterBroker"),
        broker_id=context.node_id,
        host=context.advertised_host,
        port=context.advertised_port,
        rack=None,
        is_fenced=False,
    )
    if endpoint_type != BROKERS_ENDPOINT_TYPE:
        return make(
            response_type(ApiKey.DESCRIBE_CLUSTER, version),
            throttle_time=0,
            error_code=ErrorCode.unsupported_endpoint_type,
            error_message="Only the brokers endpoint type is supported.",
            endpoint_type=endpoint_type,
            cluster_id=context.cluster_id,
            controller_id=-1,
            brokers=(),
            cluster_authorized_operations=cluster_operations(False),
        )
    return make(
        response_type(ApiKey.DESCRIBE_CLUSTER, version),
        throttle_time=0,
        error_code=ErrorCode.none,
        error_message=None,
        endpoint_type=endpoint_type,
        cluster_id=context.cluster_id,
        controller_id=context.node_id,
        brokers=(broker,),
        cluster_authorized_operations=cluster_operations(
            request.include_cluster_authorized_operations
        ),
    )
