"""Amazon Bedrock provider through boto3's Converse API (client passed in, calls off the event loop)."""

from __future__ import annotations

import asyncio
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from connectors.llm.base import LLMError, LLMProvider, LLMResponse, RetryableLLMError, cost_usd

# The bedrock-runtime client's configuration: one try per call, because CodeGenerator
# (agents/improvement/generator.py) is the retry layer of LLM calls (it also retries timeouts).
CLIENT_CONFIG = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=120)

RETRYABLE_CODES = frozenset({
    "ThrottlingException", "ServiceUnavailableException", "InternalServerException",
    "ModelNotReadyException", "ModelTimeoutException", "TooManyRequestsException",
})


def build_request(model_id: str, prompt: str, max_tokens: int, temperature: float,
                  system: str | None = None) -> dict[str, Any]:
    """The Converse request for one user prompt."""
    request: dict[str, Any] = {
        "modelId": model_id,
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": temperature},
    }
    if system:
        request["system"] = [{"text": system}]
    return request


def parse_response(model_id: str, response: dict[str, Any]) -> LLMResponse:
    """Text blocks of the output message joined; tokens from `usage`."""
    try:
        content = response["output"]["message"]["content"]
    except (KeyError, TypeError) as exc:
        raise LLMError(f"bedrock: unexpected Converse response shape: {exc!r}") from exc
    text = "".join(block.get("text", "") for block in content if isinstance(block, dict))
    usage = response.get("usage", {})
    tin, tout = int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))
    return LLMResponse(text, tin, tout, model_id, cost_usd(model_id, tin, tout))


class BedrockProvider(LLMProvider):
    """`client` is a boto3 `bedrock-runtime` client."""

    name = "bedrock"

    def __init__(self, client: Any, model: str = "anthropic.claude-v2", system: str | None = None) -> None:
        self.client = client
        self.model = model
        self.system = system

    async def generate(self, prompt: str, max_tokens: int = 4000, temperature: float = 0.1) -> LLMResponse:
        request = build_request(self.model, prompt, max_tokens, temperature, self.system)
        try:
            response = await asyncio.to_thread(lambda: self.client.converse(**request))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in RETRYABLE_CODES or status == 429 or status >= 500:
                raise RetryableLLMError(f"bedrock {code or status}: {exc}") from exc
            raise LLMError(f"bedrock {code or status}: {exc}") from exc
        except BotoCoreError as exc:  # connection errors, read timeouts
            raise RetryableLLMError(f"bedrock transport: {exc}") from exc
        return parse_response(self.model, response)
