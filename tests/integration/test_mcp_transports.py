"""The MCP server's other doors: stdio as a subprocess, and the official MCP Inspector CLI over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from mcp_server.auth import Principal, TokenStore
from mcp_server.testing import RunningServer, running_server
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NPM_DIR = ROOT / ".kaizen" / "npm"  # gitignored cache of the Inspector
INSPECTOR_PKG = "@modelcontextprotocol/inspector@2"
TOKEN = "inspector-admin-token-0123456789"


async def _run(*cmd: str, env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


async def inspector_bin() -> Path:
    """The Inspector CLI, installed from the npm registry into .kaizen/npm if missing (fails, never skips)."""
    binary = NPM_DIR / "node_modules" / ".bin" / "mcp-inspector"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: the MCP Inspector test needs node + npm (apt-get install -y npm)")
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    rc, out, err = await _run(npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_DIR), INSPECTOR_PKG,
                              timeout=300)
    if rc != 0 or not binary.exists():
        pytest.fail(f"could not install {INSPECTOR_PKG} (rc={rc}): {err[-2000:]}")
    return binary


@pytest.fixture(scope="module")
async def http_server(backend: Any) -> AsyncIterator[RunningServer]:
    settings = Settings.model_validate({"kafka_bootstrap_servers": backend.kafka_bootstrap})
    store = TokenStore({TOKEN: Principal("inspector", None, frozenset({"admin"}))})
    async with running_server(settings, store, cycle_wait_seconds=0.5) as srv:
        yield srv


async def test_stdio_subprocess_lists_tools_and_answers(backend: Any, tmp_path: Path) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": backend.kafka_bootstrap,
           "SELF_BUILDING_MCP_API_KEY": "stdio-owner-key-0123456789", "PYTHONPATH": str(ROOT)}
    env.pop("SELF_BUILDING_MCP_TOKENS_FILE", None)
    transport = StdioTransport(command=sys.executable, args=["-m", "kaizen.cli", "mcp", "--stdio"], env=env,
                               cwd=str(tmp_path))
    async with Client(transport) as c:
        names = {t.name for t in await c.list_tools()}
        status = (await c.call_tool("get_system_status", {})).structured_content
    assert {"trigger_improvement_cycle", "generate_component", "get_system_status",
            "query_telemetry_insights", "approve_improvement"} <= names
    assert status is not None and status["broker"]["loaded"] is True


async def test_stdio_refuses_without_a_valid_token(backend: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SELF_BUILDING_MCP", "KAIZEN_MCP"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=backend.kafka_bootstrap, PYTHONPATH=str(ROOT))
    rc, _, err = await _run(sys.executable, "-m", "kaizen.cli", "mcp", "--stdio", env=env, timeout=60)
    assert rc == 2 and "error: stdio mode needs a valid token" in err and "Traceback" not in err, err


async def test_mcp_inspector_cli_lists_and_calls_tools(http_server: RunningServer, tmp_path: Path) -> None:
    binary = await inspector_bin()
    env = {**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "catalog.json"), "HOME": str(tmp_path)}
    common = ["--cli", http_server.mcp_url, "--transport", "http", "--header", f"Authorization: Bearer {TOKEN}"]
    rc, out, err = await _run(str(binary), *common, "--method", "tools/list", env=env)
    assert rc == 0, f"inspector tools/list failed: {out[-1500:]} {err[-1500:]}"
    tools = {t["name"] for t in json.loads(out)["tools"]}
    assert {"get_system_status", "trigger_improvement_cycle", "list_opportunities", "reject_improvement"} <= tools
    rc, out, err = await _run(str(binary), *common, "--method", "tools/call", "--tool-name", "get_system_status",
                              env=env)
    assert rc == 0, f"inspector tools/call failed: {out[-1500:]} {err[-1500:]}"
    result = json.loads(out)
    assert result.get("isError") in (None, False)
    assert result["structuredContent"]["broker"]["reachable"] is True
    rc, out, err = await _run(str(binary), "--cli", http_server.mcp_url, "--transport", "http",
                              "--header", "Authorization: Bearer wrong-token-0000000000", "--method", "tools/list",
                              env=env)
    assert rc != 0 or "401" in out + err
