"""LLM providers: OpenAI-compatible against a real local HTTP server, Bedrock Converse via Stubber, offline."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from agents.improvement.generator import CodeGenerator, provider_from_settings
from agents.improvement.logic.validation import validate
from connectors.breaker import BreakerOpenError, CircuitBreaker
from connectors.llm.base import LLMError, RetryableLLMError
from connectors.llm.bedrock import BedrockProvider
from connectors.llm.offline import OfflineProvider
from connectors.llm.openai_compat import OpenAICompatProvider
from streams.records import ImprovementOpportunity
from streams.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GOOD = "Sure.\n```python:generated/svc/cache.py\ndef ttl(seconds: int) -> int:\n    return max(1, seconds)\n```\n"
EVIL = ("```python:generated/svc/hack.py\nimport subprocess\n\n\ndef run(cmd: str) -> object:\n"
        "    subprocess.call(cmd, shell=True)\n    return eval(cmd)\n```\n")


class FakeLLM:
    """Canned answers: a queue of (status, body) consumed per request; the last one repeats."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []

    def completion(self, text: str, status: int = 200) -> tuple[int, dict[str, Any]]:
        return status, {"model": "gpt-4o-mini", "choices": [{"message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 1000, "completion_tokens": 500}}


@pytest.fixture
def fake_llm() -> Iterator[tuple[FakeLLM, str]]:
    fake = FakeLLM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            status, payload = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _opp(ptype: str = "latency") -> ImprovementOpportunity:
    return ImprovementOpportunity(opportunity_id="o", title="Slow checkout", description="p95 high", tenant_id="acme",
                                  problem_type=ptype, affected_components=["checkout"], first_seen=T0, last_seen=T0)


def _gen(base: str, **kw: Any) -> CodeGenerator:
    provider = OpenAICompatProvider(base, "gpt-4o-mini", api_key="sk-test")
    return CodeGenerator(provider, backoff_base=0.01, **kw)


async def test_openai_good_code_is_parsed_validated_and_accounted(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    fake.script = [fake.completion(GOOD)]
    gen = _gen(base)
    result = await gen.generate_improvement(_opp())
    assert result.ok, result.validation.errors()
    assert result.files == {"generated/svc/cache.py": "def ttl(seconds: int) -> int:\n    return max(1, seconds)\n"}
    req = fake.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-test"
    assert req["body"]["temperature"] == 0.1 and req["body"]["max_tokens"] == 4000
    assert "Telemetry Evidence:" in req["body"]["messages"][-1]["content"]
    st = gen.status()
    assert (st["input_tokens"], st["output_tokens"]) == (1000, 500)
    assert st["cost_usd"] == pytest.approx(1000 / 1000 * 0.00015 + 500 / 1000 * 0.0006)


async def test_openai_dangerous_code_fails_validation(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    fake.script = [fake.completion(EVIL)]
    result = await _gen(base).generate_improvement(_opp())
    assert not result.ok
    errs = result.validation.checks["security"]["errors"]
    assert any("subprocess" in e for e in errs) and any("eval" in e for e in errs)


async def test_429_then_success_is_retried(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    fake.script = [(429, {"error": "slow down"}), (500, {"error": "boom"}), fake.completion(GOOD)]
    gen = _gen(base)
    response = await gen.generate("hi")
    assert "svc/cache.py" in response.text and len(fake.requests) == 3
    assert gen.usage.retries == 2 and gen.usage.failed_attempts == 2 and gen.breaker.current_state() == "closed"


async def test_persistent_500_opens_the_breaker(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    fake.script = [(500, {"error": "down"})]
    gen = _gen(base, breaker=CircuitBreaker("llm-test", failure_threshold=3, recovery_seconds=60))
    with pytest.raises(RetryableLLMError, match="500"):
        await gen.generate("hi")
    assert len(fake.requests) == 3 and gen.breaker.current_state() == "open"
    with pytest.raises(BreakerOpenError):
        await gen.generate("hi")
    assert len(fake.requests) == 3  # refused without a request


async def test_bad_request_is_not_retried(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    fake.script = [(400, {"error": "bad"})]
    gen = _gen(base)
    with pytest.raises(LLMError, match="400"):
        await gen.generate("hi")
    assert len(fake.requests) == 1 and gen.breaker.current_state() == "closed"


def _bedrock_client() -> Any:
    return boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


async def test_bedrock_converse_via_stubber() -> None:
    # moto's server implements bedrock-runtime InvokeModel only, not Converse: Stubber checks the request
    # against the real botocore model and returns a canned Converse response.
    client = _bedrock_client()
    provider = BedrockProvider(client, "anthropic.claude-v2")
    answer = {"output": {"message": {"role": "assistant", "content": [{"text": GOOD}]}}, "stopReason": "end_turn",
              "usage": {"inputTokens": 1200, "outputTokens": 300, "totalTokens": 1500}, "metrics": {"latencyMs": 5}}
    expected = {"modelId": "anthropic.claude-v2", "messages": [{"role": "user", "content": [{"text": "p"}]}],
                "inferenceConfig": {"maxTokens": 4000, "temperature": 0.1}}
    with Stubber(client) as stub:
        stub.add_client_error("converse", service_error_code="ThrottlingException", http_status_code=429,
                              expected_params=expected)
        stub.add_response("converse", answer, expected)
        gen = CodeGenerator(provider, backoff_base=0.01)
        response = await gen.generate("p")
        stub.assert_no_pending_responses()
    assert response.text == GOOD and (response.input_tokens, response.output_tokens) == (1200, 300)
    assert response.cost_usd == pytest.approx(1.2 * 0.008 + 0.3 * 0.024) and gen.usage.retries == 1


async def test_bedrock_validation_error_is_not_retried() -> None:
    client = _bedrock_client()
    with Stubber(client) as stub:
        stub.add_client_error("converse", service_error_code="ValidationException", http_status_code=400)
        with pytest.raises(LLMError, match="ValidationException") as info:
            await CodeGenerator(BedrockProvider(client), backoff_base=0.01).generate("p")
    assert not isinstance(info.value, RetryableLLMError)


@pytest.mark.parametrize("ptype", ["latency", "caching_optimization", "timeout", "error_pattern"])
async def test_offline_improvements_are_valid_and_deterministic(ptype: str) -> None:
    gen = CodeGenerator(OfflineProvider())
    a = await gen.generate_improvement(_opp(ptype))
    b = await gen.generate_improvement(_opp(ptype))
    assert a.ok, a.validation.errors()
    assert a.files == b.files and a.response.cost_usd == 0 and gen.usage.input_tokens > 0


async def test_offline_generate_component() -> None:
    gen = CodeGenerator(OfflineProvider())
    r = await gen.generate_component("skill", {"name": "dedup filter", "description": "Skip re-pushes."},
                                     {"tenant": "acme"}, tenant_id="acme")
    assert r.ok, r.validation.errors()
    assert set(r.files) == {"generated/skills/dedup_filter.py", "tests/test_dedup_filter.py"}
    assert "class DedupFilter" in r.files["generated/skills/dedup_filter.py"]
    assert validate(r.files, "acme").ok


async def test_no_code_blocks_fails(fake_llm: tuple[FakeLLM, str]) -> None:
    fake, base = fake_llm
    fake.script = [fake.completion("I cannot help with that.")]
    r = await _gen(base).generate_component("agent", {"name": "x"})
    assert not r.ok and "no ```python:path" in r.validation.checks["syntax"]["errors"][0]


def test_provider_from_settings() -> None:
    assert isinstance(provider_from_settings(Settings(llm_provider="offline")), OfflineProvider)
    p = provider_from_settings(Settings(llm_provider="openai", llm_base_url="http://h/v1", llm_model="m"))
    assert isinstance(p, OpenAICompatProvider) and p.url == "http://h/v1/chat/completions"
    with pytest.raises(LLMError):
        provider_from_settings(Settings(llm_provider="bedrock"))
