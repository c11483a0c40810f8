"""`kaizen asyncapi`: the AsyncAPI 3 document of every topic (streams/topics.py) with the JSON Schema of
each record generated from its pydantic model (streams/records.py), keys and compaction stated.

docs/asyncapi.yaml is this document, checked up to date by tests/unit/test_asyncapi.py; consumers in other
languages generate their types from it (e.g. `asyncapi generate models python docs/asyncapi.yaml`).
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

from streams import topics as t
from streams.codec import ENVELOPE_KEY

KAFKA_BINDING = "0.5.0"
REF = "#/components/schemas/{model}"

# Values of topics that carry no pydantic record: what they are, said in words.
UNTYPED: dict[str, str] = {
    t.CONFIG: "JSON: a feature flag {value, actor, at}, the scheduler's last run, or a parameter value",
    t.REGISTRY: "JSON: the MCP server's agent registry record",
    t.HEALING: "JSON: a trigger firing with the actions it planned",
    t.PATTERNS: "JSON: an error pattern (template, counts, last seen as epoch seconds)",
    t.SERIES: "JSON: a series' recent points [epoch seconds, value, anomaly score] and its last score",
}
CLEAN_METRIC_EXTRA: dict[str, Any] = {
    "timestamp": {"type": "number", "description": "epoch seconds"},
    "series": {"type": "string", "description": "tenant|namespace|metric|statistic|dim=value,..."},
    "component": {"type": "string"},
}


def _channel_id(topic: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", topic)
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def _value_type(spec: t.TopicSpec) -> Any:
    """The record type of a topic's values: the typed unions for the commands and improvement events topics."""
    if spec.name == t.COMMANDS:
        from streams.commands import Command

        return Command
    if spec.name == t.IMPROVEMENT_EVENTS:
        from streams.improvement_events import TypedEvent

        return TypedEvent
    return spec.value or _healing_models().get(spec.name)


def _healing_models() -> dict[str, Any]:
    """Topics whose values are models of the healing stage rather than of streams/records.py."""
    from agents.healing.logic import execution_metrics, healing

    found = {getattr(t, "HEALING", None): getattr(healing, "HealingRecord", None),
             getattr(t, "HEALING_OBSERVATIONS", None): getattr(healing, "Observation", None),
             getattr(t, "EXECUTIONS", None): getattr(execution_metrics, "ExecutionMetrics", None)}
    return {k: v for k, v in found.items() if k and v is not None}


def _schema(tp: Any, mode: str, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a model (or a union), its $defs moved into the shared components."""
    schema = _asyncapi_dialect(TypeAdapter(tp).json_schema(mode=mode, ref_template=REF))  # type: ignore[arg-type]
    for name, sub in schema.pop("$defs", {}).items():
        defs[name] = sub
    return schema


def _asyncapi_dialect(node: Any) -> Any:
    """AsyncAPI's schema names its discriminator by the property (a string), OpenAPI's by an object."""
    if isinstance(node, dict):
        out = {k: _asyncapi_dialect(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_dialect(v) for v in node]
    return node


def _name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp.__name__
    from streams.improvement_events import TypedEvent

    return "ImprovementEvent" if tp is TypedEvent else "Command"


def _envelope(item: dict[str, Any], what: str) -> dict[str, Any]:
    return {"type": "object", "title": f"{what}Envelope", "required": [ENVELOPE_KEY], "additionalProperties": True,
            "properties": {ENVELOPE_KEY: {"type": "array", "items": item}}}


def _payload(spec: t.TopicSpec, defs: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """(message name, payload schema, description) of a topic's values."""
    tp = _value_type(spec)
    if tp is None:
        name = _channel_id(spec.name)[:1].upper() + _channel_id(spec.name)[1:] + "Value"
        return name, {"type": "object", "additionalProperties": True, "description": UNTYPED.get(spec.name, "JSON")}, \
            UNTYPED.get(spec.name, "JSON")
    name = _name(tp)
    if spec.name in t.RAW_TOPICS.values():  # what producers write: validation mode, one record or an envelope
        defs[f"{name}Input"] = _schema(tp, "validation", defs)
        ref = {"$ref": REF.format(model=f"{name}Input")}
        return f"{name}Raw", {"oneOf": [ref, _envelope(ref, name)]}, \
            f"one {name} or an envelope {{\"records\": [...]}} of them; key every message by its tenant_id"
    schema = _schema(tp, "serialization", defs)
    defs[name] = schema
    ref = {"$ref": REF.format(model=name)}
    if spec.name == t.CLEAN_TOPICS["metric"]:  # the lean point (streams/metric_codec.py)
        defs["CleanMetricPoint"] = {**schema, "title": "CleanMetricPoint",
                                    "properties": {**schema["properties"], **CLEAN_METRIC_EXTRA},
                                    "required": sorted({*schema.get("required", []), "series", "component"})}
        lean = {"$ref": REF.format(model="CleanMetricPoint")}
        return "CleanMetricPoints", _envelope(lean, "CleanMetricPoint"), \
            "an envelope of deduplicated MetricDataPoints, timestamp as epoch seconds, plus series and component"
    if spec.name in t.CLEAN_TOPICS.values():
        return f"Clean{name}s", _envelope(ref, name), f"an envelope of deduplicated {name}s"
    return name, ref, (schema.get("description") or name).strip()


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every declared topic."""
    try:
        ver = version("kaizen")
    except PackageNotFoundError:
        ver = "0.0.0"
    defs: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in t.TOPICS:
        cid = _channel_id(spec.name)
        mname, payload, about = _payload(spec, defs)
        messages[mname] = {
            "name": mname, "title": mname, "contentType": "application/json", "summary": about[:200],
            "payload": payload,
            "bindings": {"kafka": {"key": {"type": "string", "description": spec.key},
                                   "bindingVersion": KAFKA_BINDING}},
        }
        policy = "compact" if spec.compacted else "delete"
        topic_config: dict[str, Any] = {"cleanup.policy": [policy]}
        if "retention.ms" in spec.config:
            topic_config["retention.ms"] = int(spec.config["retention.ms"])
        channels[cid] = {
            "address": spec.name,
            "title": spec.name,
            "description": f"Key: {spec.key}. " + ("Compacted: the latest value per key is the state."
                                                   if spec.compacted else "Not compacted (7 days retention)."),
            "messages": {mname: {"$ref": f"#/components/messages/{mname}"}},
            "bindings": {"kafka": {"topic": spec.name, "topicConfiguration": topic_config,
                                   "bindingVersion": KAFKA_BINDING}},
        }
        operations[f"receive{cid[:1].upper()}{cid[1:]}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"Read {spec.name}",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{mname}"}],
        }
    return {
        "asyncapi": "3.0.0",  # 3.1.0 validates too, but the CLI's model generator (Modelina) reads 3.0.0 only
        "info": {
            "title": "kaizen topics", "version": ver,
            "description": "Every Kafka topic of kaizen, its key and its JSON value (streams/topics.py, "
                           "streams/records.py). Generated by `kaizen asyncapi`; do not edit by hand.",
        },
        "defaultContentType": "application/json",
        "servers": {"embedded": {"host": "127.0.0.1:9092", "protocol": "kafka",
                                 "description": "`kaizen run` prints the embedded broker's address "
                                                "(KAIZEN_EMBEDDED_KAFKA_PORT fixes the port); any Kafka works"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(defs.items()))},
    }


class _PlainDumper(yaml.SafeDumper):
    """No &anchors/*aliases for schemas shared by two models: every reader sees them written out."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> str:
    return yaml.dump(document(), Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=110)


def message_schema(doc: dict[str, Any], topic: str) -> dict[str, Any]:
    """The payload schema of a topic's message with the components attached, for a JSON Schema validator."""
    channel = next(c for c in doc["channels"].values() if c["address"] == topic)
    ref = next(iter(channel["messages"].values()))["$ref"]
    message = doc["components"]["messages"][ref.rsplit("/", 1)[1]]
    return {**message["payload"], "components": {"schemas": doc["components"]["schemas"]}}
