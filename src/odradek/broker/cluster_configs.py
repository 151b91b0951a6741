"""Dynamic configs of a cluster member: ConfigRecords in the controller's metadata log.

On a cluster (Kafka's KRaft mode) every dynamic config — a topic's, a broker's, the cluster-wide
broker default (resource name ""), a group's — is a ConfigRecord written by the controller, and
every broker applies the same records from its `MetadataImage` (Kafka's
`DynamicConfigPublisher`): topic configs to its logs, broker configs as its dynamic broker
configs (precedence as KIP-226), group configs to its group coordinator. So a value such as
`min.insync.replicas` or `unclean.leader.election.enable` is the same on every broker, and
DescribeConfigs on any broker reports it with the same source. The single broker keeps its own
config store (`storage/config_store.py`) and never runs this code.

AlterConfigs and IncrementalAlterConfigs received by a broker are checked with the broker's own
rules first (names, types, ranges, group bounds; the same messages as on a single broker), then
forwarded to the controller as IncrementalAlterConfigs SET / DELETE operations (AlterConfigs'
whole-set semantics become the difference to the current overrides; Kafka's brokers forward the
request in an Envelope instead). The answer returns once this broker's image shows the change,
at most `_PROPAGATION_TIMEOUT_S` later, so a client's next DescribeConfigs sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.broker.config import ConfigError
from odradek.broker.dynamic_configs import (
    alter_broker_configs,
    alter_group_configs,
    apply_broker_config,
    apply_group_configs,
    effective_config,
)
from odradek.broker.kafka_channel import ChannelError
from odradek.broker.topics import TOPIC_CONFIG_NAMES, config_value_error
from odradek.controller import ConfigResourceType
from odradek.protocol.api_keys import ApiKey
from odradek.protocol.codec import (
    RequestHeader,
    make,
    nested,
    request_module,
    request_type,
    response_module,
    response_type,
)
from odradek.storage.config_store import ConfigImage, ConfigStore
from odradek.storage.log_manager import InvalidConfig, log_config_from_overrides

if TYPE_CHECKING:
    from odradek.broker.cluster_member import ClusterMember
    from odradek.broker.context import BrokerContext

logger = logging.getLogger(__name__)

ConfigKey = tuple[int, str]
#: Computes a resource's new overrides from its current ones: (overrides, None) or
#: (None, message) for an operation that cannot apply (INVALID_CONFIG).
NewOverrides = Callable[[Any, Mapping[str, str]], tuple[dict[str, str] | None, str | None]]

_FORWARD_VERSION = 1
_SET, _DELETE = 0, 1
#: How long an alter waits for its ConfigRecords to reach this broker's image (seconds).
_PROPAGATION_TIMEOUT_S = 5.0
#: Topics each broker keeps for itself (cluster_member.LOCAL_INTERNAL_TOPICS); no configs.
_LOCAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


class MetadataConfigView(ConfigStore):
    """A cluster member's `context.config_store`: the broker and group configs of its metadata
    image, read-only (the controller writes them). Describe and validation code reads `image`
    exactly as on a single broker."""

    def __init__(self) -> None:
        super().__init__(Path(), ConfigImage(), 0, 0)

    def append(self, records: Any) -> None:
        """Never: on a cluster only the controller writes ConfigRecords."""
        raise RuntimeError("a cluster member's configs are written by the controller")

    def update(self, configs: Mapping[ConfigKey, Mapping[str, str]]) -> None:
        """Take the image's configs (topic configs live in the topics' logs)."""
        self.image = ConfigImage(
            {
                key: dict(values)
                for key, values in configs.items()
                if key[0] != ConfigResourceType.TOPIC
            }
        )


# -- applying the image ----------------------------------------------------------------------


def _changed_keys(
    previous: Mapping[ConfigKey, Mapping[str, str]], current: Mapping[ConfigKey, Mapping[str, str]]
) -> set[ConfigKey]:
    return {
        key
        for key in set(previous) | set(current)
        if dict(previous.get(key, {})) != dict(current.get(key, {}))
    }


def apply_metadata_configs(
    context: BrokerContext,
    previous: Mapping[ConfigKey, Mapping[str, str]],
    current: Mapping[ConfigKey, Mapping[str, str]],
) -> None:
    """Make this broker's configs those of the image (Kafka's DynamicConfigPublisher).

    `previous` and `current` are the image's configs before and after a metadata batch. Broker
    configs for this broker's id or "" rebuild `context.config` (a combination that does not
    validate is logged and skipped, as Kafka skips it); every local topic's overrides are made
    equal to the image's (which also repairs a broker that missed a change while down); groups
    get their consumer overrides; replicated partitions re-read `min.insync.replicas`.
    """
    view = context.config_store
    if isinstance(view, MetadataConfigView):
        view.update(current)
    changed = _changed_keys(previous, current)
    own = {(ConfigResourceType.BROKER, ""), (ConfigResourceType.BROKER, str(context.node_id))}
    if changed & own and view is not None:
        static = context.static_config or context.config
        try:
            updated = effective_config(static, view.image)
            apply_broker_config(context, updated)
            logger.info("dynamic broker configs from the metadata log applied")
        except (ConfigError, InvalidConfig) as error:
            logger.error("dynamic broker configs from the metadata log ignored: %s", error)
    for name, metadata in list(context.logs.topics().items()):
        if name in _LOCAL_TOPICS:
            continue
        wanted = dict(current.get((ConfigResourceType.TOPIC, name), {}))
        if dict(metadata.config) != wanted:
            try:
                context.logs.alter_topic_config(name, wanted)
                logger.info("configs of topic %s now %s", name, wanted)
            except InvalidConfig as error:
                logger.error("configs of topic %s from the metadata log ignored: %s", name, error)
    for resource_type, name in sorted(changed):
        if resource_type == ConfigResourceType.GROUP:
            apply_group_configs(context, name, current.get((resource_type, name), {}))


# -- altering --------------------------------------------------------------------------------


def topic_config_error(context: BrokerContext, overrides: Mapping[str, str]) -> str | None:
    """Why `overrides` cannot be a topic's configs (Kafka's messages), or None."""
    unknown = sorted(set(overrides) - TOPIC_CONFIG_NAMES)
    if unknown:
        return f"Unknown topic config name: {unknown[0]}"
    for name, value in overrides.items():
        problem = config_value_error(name, value)
        if problem is not None:
            return problem
    try:
        log_config_from_overrides(context.logs.default_config, overrides)
    except InvalidConfig as error:
        return str(error)
    return None


def _check(
    context: BrokerContext, resource: Any, overrides: Mapping[str, str]
) -> tuple[ErrorCode, str | None]:
    kind, name = resource.resource_type, resource.resource_name
    if kind == ConfigResourceType.TOPIC:
        problem = topic_config_error(context, overrides)
        return (ErrorCode.invalid_config, problem) if problem else (ErrorCode.none, None)
    if kind == ConfigResourceType.BROKER:
        return alter_broker_configs(context, name, overrides, validate_only=True)
    return alter_group_configs(context, name, overrides, validate_only=True)


async def alter_configs(
    context: BrokerContext, header: RequestHeader, request: Any, new_overrides: NewOverrides
) -> Any:
    """(Incremental)AlterConfigs on a cluster member (see the module docstring).

    Errors per resource: UNKNOWN_TOPIC_OR_PARTITION for a topic the image lacks,
    INVALID_REQUEST for an unsupported resource type or another broker's id, INVALID_CONFIG /
    INVALID_REQUEST as the single broker answers for a bad value, the controller's error for
    what it refuses, REQUEST_TIMED_OUT when the controller cannot be reached.
    """
    member = context.cluster
    assert member is not None
    image = member.image
    outcomes: list[tuple[ErrorCode, str | None]] = []
    # index -> (key, changes to send, overrides expected afterwards)
    to_forward: dict[int, tuple[ConfigKey, dict[str, str | None], dict[str, str]]] = {}
    for index, resource in enumerate(request.resources):
        kind, name = int(resource.resource_type), resource.resource_name
        if kind not in (
            ConfigResourceType.TOPIC,
            ConfigResourceType.BROKER,
            ConfigResourceType.GROUP,
        ):
            outcomes.append((ErrorCode.invalid_request, "Unsupported resource type."))
            continue
        if kind == ConfigResourceType.TOPIC and image.topic(name) is None:
            missing = f"Topic '{name}' does not exist."
            outcomes.append((ErrorCode.unknown_topic_or_partition, missing))
            continue
        current = dict(image.configs.get((kind, name), {}))
        wanted, problem = new_overrides(resource, current)
        if wanted is None:
            outcomes.append((ErrorCode.invalid_config, problem))
            continue
        error, message = _check(context, resource, wanted)
        outcomes.append((error, message))
        if error is not ErrorCode.none or request.validate_only:
            continue
        changes: dict[str, str | None] = {
            key: value for key, value in wanted.items() if current.get(key) != value
        }
        changes.update({key: None for key in current if key not in wanted})
        if changes:
            to_forward[index] = ((kind, name), changes, wanted)
    if to_forward:
        answers = await _forward(member, request, to_forward)
        for index, answer in answers.items():
            outcomes[index] = answer
        expected = {
            key: wanted
            for index, (key, _changes, wanted) in to_forward.items()
            if outcomes[index][0] is ErrorCode.none
        }
        await _wait_for_configs(member, expected)
    version = header.api_version
    result_type = nested(response_module(header.api_key, version), "AlterConfigsResourceResponse")
    return make(
        response_type(header.api_key, version),
        throttle_time=0,
        responses=tuple(
            make(
                result_type,
                error_code=error,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
            )
            for resource, (error, message) in zip(request.resources, outcomes, strict=True)
        ),
    )


async def _forward(
    member: ClusterMember,
    request: Any,
    to_forward: Mapping[int, tuple[ConfigKey, dict[str, str | None], dict[str, str]]],
) -> dict[int, tuple[ErrorCode, str | None]]:
    module = request_module(ApiKey.INCREMENTAL_ALTER_CONFIGS, _FORWARD_VERSION)
    resource_type = nested(module, "AlterConfigsResource")
    config_type = nested(module, "AlterableConfig")
    order = sorted(to_forward)
    forwarded = make(
        request_type(ApiKey.INCREMENTAL_ALTER_CONFIGS, _FORWARD_VERSION),
        resources=tuple(
            make(
                resource_type,
                resource_type=to_forward[index][0][0],
                resource_name=to_forward[index][0][1],
                configs=tuple(
                    make(
                        config_type,
                        name=name,
                        config_operation=_SET if value is not None else _DELETE,
                        value=value,
                    )
                    for name, value in sorted(to_forward[index][1].items())
                ),
            )
            for index in order
        ),
        validate_only=False,
    )
    try:
        response = await member.forward(
            ApiKey.INCREMENTAL_ALTER_CONFIGS, _FORWARD_VERSION, forwarded
        )
    except ChannelError:
        message = "The controller could not be reached."
        return dict.fromkeys(order, (ErrorCode.request_timed_out, message))
    return {
        index: (ErrorCode(answer.error_code), answer.error_message)
        for index, answer in zip(order, response.responses, strict=True)
    }


async def _wait_for_configs(
    member: ClusterMember, expected: Mapping[ConfigKey, Mapping[str, str]]
) -> None:
    """Until the image holds `expected` for every key, at most _PROPAGATION_TIMEOUT_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _PROPAGATION_TIMEOUT_S
    while True:
        configs = member.image.configs
        if all(dict(configs.get(key, {})) == dict(value) for key, value in expected.items()):
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(member.next_image(), remaining)
