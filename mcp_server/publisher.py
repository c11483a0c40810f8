"""Publishing the MCP server's outputs (commands, audit, registry) to Kafka with an aiokafka producer."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams import topics as t
from streams.commands import CommandBase, Decision
from streams.records import AuditRecord, Record, utcnow

AGENT_ID = "self-building"
VERSION = "1.0.0"
CAPABILITIES = ["autonomous_improvement", "code_generation", "system_optimization", "telemetry_analysis",
                "component_generation"]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


class Publisher:
    """Sends records keyed by id; waits for the broker's ack so a returned command id is really on Kafka."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(self, topic: str, key: str | None, value: Record | dict[str, Any]) -> None:
        data = value.to_bytes() if isinstance(value, Record) else orjson.dumps(value)
        await self.producer.send_and_wait(topic, data, key=key.encode() if key is not None else None)

    async def command(self, cmd: CommandBase) -> None:
        """Keyed by improvement (its decisions stay in order) or tenant."""
        key = cmd.improvement_id if isinstance(cmd, Decision) else None
        await self.send(t.COMMANDS, key or cmd.tenant_id or "system", cmd)

    async def audit(self, actor: str, action: str, *, tenant_id: str | None = None, target: str | None = None,
                    detail: dict[str, Any] | None = None) -> AuditRecord:
        rec = AuditRecord(audit_id=new_id("audit"), timestamp=utcnow(), actor=actor, action=action,
                          tenant_id=tenant_id, target=target, detail=detail or {})
        await self.send(t.AUDIT, rec.audit_id, rec)
        return rec

    async def register(self, base_url: str, status: str = "active") -> dict[str, Any]:
        """The agent-registry record, published (compacted, keyed by agent_id) to REGISTRY."""
        info = {
            "agent_id": AGENT_ID, "name": "Self-Building Agent", "type": "system",
            "mcp_endpoint": f"{base_url}/mcp", "health_endpoint": f"{base_url}/health",
            "capabilities": CAPABILITIES, "version": VERSION, "status": status,
            "timestamp": utcnow().isoformat(),
        }
        await self.send(t.REGISTRY, AGENT_ID, info)
        return info
