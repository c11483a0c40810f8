"""OpenAI-compatible chat-completions provider over httpx (`POST {base_url}/v1/chat/completions`)."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.llm.base import (
    LLMError,
    LLMProvider,
    LLMResponse,
    RetryableLLMError,
    cost_usd,
    estimate_tokens,
)


def completions_url(base_url: str) -> str:
    """Accept a base URL with or without the trailing /v1."""
    base = base_url.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class OpenAICompatProvider(LLMProvider):
    """Any server speaking the OpenAI chat-completions protocol (OpenAI, vLLM, llama.cpp, Ollama...).

    `client` may be passed in (shared connection pool); otherwise one is created and owned."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 client: httpx.AsyncClient | None = None, timeout: float = 60.0,
                 system: str | None = None) -> None:
        self.url = completions_url(base_url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.system = system
        self._client = client
        self._owns_client = client is None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def build_body(self, prompt: str, max_tokens: int, temperature: float) -> dict[str, Any]:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": prompt}]
        return {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}

    async def generate(self, prompt: str, max_tokens: int = 4000, temperature: float = 0.1) -> LLMResponse:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            resp = await self._http().post(self.url, json=self.build_body(prompt, max_tokens, temperature),
                                           headers=headers, timeout=self.timeout)
        except httpx.TransportError as exc:  # connect errors and timeouts
            raise RetryableLLMError(f"openai-compatible transport: {exc!r}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            raise RetryableLLMError(f"openai-compatible HTTP {resp.status_code}: {resp.text[:200]}")
        if resp.status_code >= 400:
            raise LLMError(f"openai-compatible HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            payload = resp.json()
            text = payload["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"openai-compatible: unexpected response: {resp.text[:200]}") from exc
        usage = payload.get("usage") or {}
        tin = int(usage.get("prompt_tokens", estimate_tokens(prompt)))
        tout = int(usage.get("completion_tokens", estimate_tokens(text)))
        model = str(payload.get("model", self.model))
        return LLMResponse(text, tin, tout, model, cost_usd(model, tin, tout))
