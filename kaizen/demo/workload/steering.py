"""How the demo steers kaizen the way a user does: MCP tools over HTTP, or Commands on the broker as a fallback."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import structlog
from aiokafka import AIOKafkaProducer
from fastmcp import Client
from fastmcp.exceptions import ToolError

from streams.commands import Decision, TriggerCycle
from streams.records import utcnow
from streams.topics import COMMANDS

log = structlog.get_logger(__name__)


class Steering:
    """Trigger cycles (as the operator) and approve improvements (as a different principal, the approver).

    With MCP tokens and a healthy server, calls `trigger_improvement_cycle` / `approve_improvement` over
    streamable HTTP; otherwise publishes the equivalent Command to the commands topic."""

    def __init__(self, producer: AIOKafkaProducer, mcp_url: str | None, operator_token: str | None,
                 approver_token: str | None, operator: str = "demo-operator", approver: str = "demo-approver") -> None:
        self.producer = producer
        self.mcp_url = mcp_url
        self.operator_token = operator_token
        self.approver_token = approver_token
        self.operator = operator
        self.approver = approver
        self.via = "commands"

    async def wait_for_mcp(self, timeout: float = 60.0) -> bool:
        """True once the MCP server answers /health (and tokens are known); decides the path used."""
        if not (self.mcp_url and self.operator_token and self.approver_token):
            return False
        health = self.mcp_url.rsplit("/mcp", 1)[0] + "/health"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while loop.time() < deadline:
                try:
                    if (await http.get(health)).status_code == 200:
                        self.via = "mcp"
                        return True
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        log.warning("MCP server not reachable; steering through the commands topic", url=self.mcp_url)
        return False

    async def _tool(self, token: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.mcp_url is not None
        async with Client(self.mcp_url, auth=token, timeout=30.0) as client:
            result = await client.call_tool(name, args)
        data = result.structured_content or {}
        return dict(data)

    async def _command(self, cmd: TriggerCycle | Decision) -> str:
        key = (cmd.improvement_id if isinstance(cmd, Decision) else cmd.tenant_id) or ""
        await self.producer.send_and_wait(COMMANDS, key=key.encode(), value=cmd.to_bytes())
        return cmd.command_id

    async def trigger(self, tenant: str, component: str | None = None, problem_type: str | None = None,
                      cycle_id: str | None = None) -> str:
        """A manual cycle for one tenant, last hour, one improvement, optionally focused on a component's
        problem type; returns a short description. `cycle_id` names the cycle of a command (the MCP server
        names its own)."""
        focus = {"component": component, "problem_type": problem_type} if component and problem_type else {}
        shown = f" focused on {component}/{problem_type}" if focus else ""
        if self.via == "mcp" and self.operator_token:
            try:
                res = await self._tool(self.operator_token, "trigger_improvement_cycle",
                                       {"tenant_id": tenant, "analysis_window_hours": 1, "max_improvements": 1,
                                        **focus})
                return f"MCP trigger_improvement_cycle: {res.get('status', '?')} ({res.get('cycle_id', '')}){shown}"
            except (ToolError, httpx.HTTPError, OSError, RuntimeError) as exc:
                log.warning("MCP trigger failed; using the commands topic", error=str(exc)[:200])
        cid = await self._command(TriggerCycle(
            command_id=f"{self.operator}-{uuid.uuid4().hex[:12]}", timestamp=utcnow(), actor=self.operator,
            roles=["operator"], tenant_id=tenant, cycle_id=cycle_id, analysis_window_hours=1, max_improvements=1,
            component=component if focus else None, problem_type=problem_type if focus else None))
        return f"command trigger_cycle {cid}{shown}"

    async def approve(self, improvement_id: str, tenant: str, reason: str) -> str:
        """Approve as the approver principal (never the requester)."""
        if self.via == "mcp" and self.approver_token:
            for attempt in range(5):
                try:
                    await self._tool(self.approver_token, "approve_improvement",
                                     {"improvement_id": improvement_id, "reason": reason})
                    return f"{self.approver} via MCP approve_improvement"
                except ToolError as exc:  # the server's read model may not know the improvement yet
                    log.info("approve not accepted yet", attempt=attempt, error=str(exc)[:200])
                    await asyncio.sleep(1.0)
                except (httpx.HTTPError, OSError, RuntimeError) as exc:
                    log.warning("MCP approve failed; using the commands topic", error=str(exc)[:200])
                    break
        await self._command(Decision(command_id=f"{self.approver}-{uuid.uuid4().hex[:12]}", kind="approve",
                                     timestamp=utcnow(), actor=self.approver, roles=["approver"], tenant_id=tenant,
                                     improvement_id=improvement_id, reason=reason))
        return f"{self.approver} via command"
