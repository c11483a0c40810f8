"""What `kaizen run` prints: the broker and AWS endpoint its children use, and the keys it hands over."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from kaizen.demo.env import APPROVER_TOKEN_ENV, OPERATOR_TOKEN_ENV, write_tokens
from kaizen.embedded import EmbeddedStack, ManagedProcess
from kaizen.supervisor import Supervisor, hand_over_keys
from mcp_server.auth import load_tokens_file
from streams.settings import Settings


def _proc(name: str) -> ManagedProcess:
    proc = subprocess.Popen(["true"])
    proc.wait()  # only its name matters here
    return ManagedProcess(name, proc, 0)


def test_describes_embedded_moto_not_real_aws(tmp_path: Path) -> None:
    sup = Supervisor(Settings(), tmp_path, stack=EmbeddedStack([_proc("tansu"), _proc("moto")]),
                     env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:5", "AWS_ENDPOINT_URL": "http://127.0.0.1:6"})
    assert sup.describe_infrastructure() == [
        "kafka: 127.0.0.1:5 (embedded Tansu broker, in memory)",
        "aws: http://127.0.0.1:6 (embedded moto server: no real AWS is touched)"]


def test_describes_the_configured_endpoint_the_children_get(tmp_path: Path) -> None:
    """AWS_ENDPOINT_URL set by the user (say, at moto): that is what is printed — was "aws: real AWS"."""
    settings = Settings(kafka_bootstrap_servers="10.0.0.1:9092", aws_endpoint_url="http://127.0.0.1:7")
    sup = Supervisor(settings, tmp_path, env={"KAFKA_BOOTSTRAP_SERVERS": "10.0.0.1:9092"})
    assert sup.describe_infrastructure() == ["kafka: 10.0.0.1:9092 (KAFKA_BOOTSTRAP_SERVERS)",
                                             "aws: http://127.0.0.1:7 (AWS_ENDPOINT_URL)"]
    real = Supervisor(Settings(aws_region="eu-west-1"), tmp_path, env={"KAFKA_BOOTSTRAP_SERVERS": "b:1"})
    assert real.describe_infrastructure()[1] == "aws: real AWS, region eu-west-1 (credentials of the AWS SDK)"


def test_demo_hands_the_dashboard_and_the_inspector_a_principal_each(tmp_path: Path) -> None:
    env = {"KAIZEN_DATA_DIR": str(tmp_path)}
    path = write_tokens(env)
    assert path is not None
    settings = Settings(self_building_mcp_tokens_file=path, self_building_mcp_port=8123)
    lines = hand_over_keys(settings, env)
    principals = {tok: p.name for tok, p in load_tokens_file(path).items()}
    dash = next(ln for ln in lines if ln.startswith("dashboard (demo-operator): "))
    assert dash.endswith(f"http://127.0.0.1:8123/?token={env[OPERATOR_TOKEN_ENV]}")
    inspector = next(ln for ln in lines if ln.startswith("MCP Inspector (demo-approver): "))
    args = shlex.split(inspector.split(": ", 1)[1])
    assert args[:4] == ["npx", "@modelcontextprotocol/inspector@2", "--cli", "http://127.0.0.1:8123/mcp"]
    assert f"Authorization: Bearer {env[APPROVER_TOKEN_ENV]}" in args and "--stored-auth-only" in args
    assert principals[env[OPERATOR_TOKEN_ENV]] == "demo-operator"
    assert principals[env[APPROVER_TOKEN_ENV]] == "demo-approver"
    assert str(path) in lines[0]


def test_without_the_demo_an_admin_key_is_generated_and_shared(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    lines = hand_over_keys(Settings(), env)
    key = env["SELF_BUILDING_MCP_API_KEY"]  # the MCP child inherits it: the printed token works there
    assert len(key) > 16 and any(ln.endswith(f"?token={key}") for ln in lines)
    assert hand_over_keys(Settings(self_building_mcp_api_key="given-admin-key-0123456789"), {})[1].endswith(
        "?token=given-admin-key-0123456789")
