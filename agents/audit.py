"""Audit trail: every cycle, generation request, decision, deployment and rollback — topic + JSONL."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from agents.healing.history import append_jsonl
from streams.records import AuditRecord

log = structlog.get_logger(__name__)


def audit_record(action: str, actor: str, *, tenant_id: str | None = None, target: str | None = None,
                 detail: dict[str, Any] | None = None, now: datetime | None = None) -> AuditRecord:
    ts = now or datetime.now(UTC)
    aid = hashlib.sha1(f"{action}|{actor}|{target}|{ts.isoformat()}".encode()).hexdigest()[:20]
    return AuditRecord(audit_id=f"audit-{aid}", timestamp=ts, actor=actor, action=action, tenant_id=tenant_id,
                       target=target, detail=detail or {})


async def write_audit(rec: AuditRecord, topic: Any, jsonl_path: Path) -> None:
    """Send to the audit topic and append to the JSONL file (off the event loop; never raises on IO)."""
    await topic.send(key=rec.audit_id.encode(), value=rec.to_bytes())
    await asyncio.to_thread(append_jsonl, [orjson.dumps(rec.model_dump(mode="json"))], jsonl_path)
    log.info("audit", action=rec.action, actor=rec.actor, target=rec.target, tenant=rec.tenant_id)
