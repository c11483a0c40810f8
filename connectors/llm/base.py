"""The LLM provider interface: generate(prompt) -> LLMResponse with token and cost accounting."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from streams.errors import ProviderError, TransientError

# USD per 1 000 tokens (input, output) of models kaizen knows; unknown models cost 0 (say so in status).
PRICES_PER_1K: dict[str, tuple[float, float]] = {
    "anthropic.claude-v2": (0.008, 0.024),
    "anthropic.claude-3-haiku-20240307-v1:0": (0.00025, 0.00125),
    "anthropic.claude-3-5-sonnet-20240620-v1:0": (0.003, 0.015),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4o": (0.0025, 0.01),
}


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> float:
    price_in, price_out = PRICES_PER_1K.get(model, (0.0, 0.0))
    return round(input_tokens / 1000 * price_in + output_tokens / 1000 * price_out, 8)


def estimate_tokens(text: str) -> int:
    """A provider-free token estimate (≈4 characters per token) for providers that report none."""
    return max(1, (len(text) + 3) // 4) if text else 0


@dataclass(frozen=True)
class LLMResponse:
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    cost_usd: float


class LLMError(ProviderError):
    """The provider refused or failed the request; not worth retrying (bad request, auth, parse)."""


class RetryableLLMError(LLMError, TransientError):
    """A transient failure (throttling, 429, 5xx, timeout): retried with backoff."""


class LLMProvider(ABC):
    """One LLM backend.  Implementations never block the event loop."""

    name: str = "llm"
    model: str = ""

    @abstractmethod
    async def generate(self, prompt: str, max_tokens: int = 4000, temperature: float = 0.1) -> LLMResponse:
        """Complete the prompt; raises RetryableLLMError for transient failures, LLMError otherwise."""


def render_code_blocks(files: Mapping[str, str]) -> str:
    """The answer format the prompts ask for (the inverse of prompts.parse_code_blocks) (used by the offline provider)."""
    return "\n\n".join(f"```python:{path}\n{code.rstrip()}\n```" for path, code in sorted(files.items()))
