"""CodeGenerator: prompt → LLM (retries with backoff, circuit breaker, token/cost accounting) → files → validation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from agents.healing.logic.policies import effective_max_tokens
from agents.improvement.logic.prompts import (
    DEFAULT_ARCHITECTURE,
    build_component_prompt,
    build_improvement_prompt,
    parse_code_blocks,
)
from agents.improvement.logic.validation import ValidationResult, validate
from connectors.breaker import CircuitBreaker
from connectors.llm.base import LLMError, LLMProvider, LLMResponse, RetryableLLMError
from connectors.llm.bedrock import BedrockProvider
from connectors.llm.offline import OfflineProvider
from connectors.llm.openai_compat import OpenAICompatProvider
from streams.records import ImprovementOpportunity
from streams.settings import Settings

Validator = Callable[[dict[str, str], str | None], ValidationResult]


@dataclass
class GenerationResult:
    files: dict[str, str]
    validation: ValidationResult
    response: LLMResponse
    prompt: str

    @property
    def ok(self) -> bool:
        return self.validation.ok

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "files": sorted(self.files), "validation": self.validation.checks,
                "model": self.response.model, "input_tokens": self.response.input_tokens,
                "output_tokens": self.response.output_tokens, "cost_usd": self.response.cost_usd}


@dataclass
class Usage:
    calls: int = 0  # attempts sent to the provider
    succeeded: int = 0
    failed_attempts: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, r: LLMResponse) -> None:
        self.succeeded += 1
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens
        self.cost_usd += r.cost_usd
        m = self.by_model.setdefault(r.model, {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})
        m["calls"] += 1
        m["input_tokens"] += r.input_tokens
        m["output_tokens"] += r.output_tokens
        m["cost_usd"] += r.cost_usd


class CodeGenerator:
    """Wraps one provider with: 3 tries (exponential backoff `backoff_base * 2^(n-1)` s: 2 s, 4 s by
    default, as the manual's 2^attempt), a per-attempt timeout (60 s), a circuit breaker (3
    consecutive transient failures → open for 60 s; refused calls raise BreakerOpenError) and usage
    accounting.  Non-transient LLMError is not retried and does not trip the breaker.  These tries are
    the only retry layer of LLM calls: providers do not retry, and the Bedrock client is built with the
    SDK's retries off (connectors/llm/bedrock.py CLIENT_CONFIG)."""

    def __init__(self, provider: LLMProvider, breaker: CircuitBreaker | None = None, max_attempts: int = 3,
                 backoff_base: float = 2.0, attempt_timeout: float = 60.0, max_tokens: int = 4000,
                 temperature: float = 0.1, validator: Validator = validate) -> None:
        self.provider = provider
        self.breaker = breaker or CircuitBreaker(f"llm:{provider.name}", failure_threshold=3, recovery_seconds=60.0)
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.attempt_timeout = attempt_timeout
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.validator = validator
        self.usage = Usage()
        # Set by the worker (agents/improvement/context.py): the config view the LLM policies are read from
        # (token budget, cost cap: docs/healing.md), and where each completion is recorded as an execution.
        self.policy: Callable[[], Mapping[str, Any]] | None = None
        self.on_call: Callable[..., Awaitable[None]] | None = None

    async def _attempt(self, prompt: str, max_tokens: int, temperature: float) -> LLMResponse:
        answered: LLMError | None = None  # a refusal from a reachable provider: not a failure of it
        with self.breaker.guard():  # BreakerOpenError (not retried) while open
            self.usage.calls += 1
            try:
                response = await asyncio.wait_for(self.provider.generate(prompt, max_tokens, temperature),
                                                  timeout=self.attempt_timeout)
            except TimeoutError as exc:
                self.usage.failed_attempts += 1
                raise RetryableLLMError(f"{self.provider.name}: no answer in {self.attempt_timeout}s") from exc
            except RetryableLLMError:
                self.usage.failed_attempts += 1
                raise
            except LLMError as exc:
                self.usage.failed_attempts += 1
                answered = exc
        if answered is not None:
            raise answered
        self.usage.add(response)
        return response

    async def generate(self, prompt: str, max_tokens: int | None = None,
                       temperature: float | None = None) -> LLMResponse:
        """One completion with retries and breaker protection."""
        mt = self.max_tokens if max_tokens is None else max_tokens
        if self.policy is not None:
            mt = effective_max_tokens(self.policy(), mt, self.provider.model, datetime.now(UTC))
        temp = self.temperature if temperature is None else temperature
        if self.on_call is None:
            return await self._generate(prompt, mt, temp)
        started, retries = datetime.now(UTC), self.usage.retries
        try:
            response = await self._generate(prompt, mt, temp)
        except LLMError as exc:
            await self.on_call(f"llm:{self.provider.name}", started, False, model=self.provider.model,
                               retries=self.usage.retries - retries, error=str(exc)[:300])
            raise
        await self.on_call(f"llm:{self.provider.name}", started, True, model=response.model,
                           tokens_input=response.input_tokens, tokens_output=response.output_tokens,
                           cost_usd=response.cost_usd, retries=self.usage.retries - retries)
        return response

    async def _generate(self, prompt: str, mt: int, temp: float) -> LLMResponse:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_base, exp_base=2),
            retry=retry_if_exception_type(RetryableLLMError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.usage.retries += 1
                return await self._attempt(prompt, mt, temp)
        raise LLMError("unreachable: retry loop ended without a result")  # pragma: no cover

    async def _files(self, prompt: str, tenant_id: str | None) -> GenerationResult:
        response = await self.generate(prompt)
        files = parse_code_blocks(response.text)
        result = self.validator(files, tenant_id)
        if not files:
            result.ok = False
            result.checks["syntax"] = {"ok": False, "errors": ["no ```python:path code blocks in the answer"]}
        return GenerationResult(files, result, response, prompt)

    async def generate_improvement(self, opportunity: ImprovementOpportunity, existing_code: str = "",
                                   architecture: str = DEFAULT_ARCHITECTURE) -> GenerationResult:
        """Manual §3: prompt, generate, parse, validate (tenant rules for tenant-scoped opportunities)."""
        prompt = build_improvement_prompt(opportunity, existing_code, architecture)
        tenant = opportunity.tenant_id if opportunity.scope == "tenant" else None
        return await self._files(prompt, tenant)

    async def generate_component(self, component_type: str, requirements: Mapping[str, Any],
                                 context: Mapping[str, Any] | None = None,
                                 tenant_id: str | None = None) -> GenerationResult:
        """generate_component, through the same path (templates when offline)."""
        prompt = build_component_prompt(component_type, requirements, context)
        return await self._files(prompt, tenant_id)

    def status(self) -> dict[str, Any]:
        u = self.usage
        return {"provider": self.provider.name, "model": self.provider.model, "breaker": self.breaker.status(),
                "calls": u.calls, "succeeded": u.succeeded, "failed_attempts": u.failed_attempts,
                "retries": u.retries, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
                "cost_usd": round(u.cost_usd, 6), "by_model": u.by_model}


def provider_from_settings(settings: Settings, bedrock_client: Any = None,
                           http_client: httpx.AsyncClient | None = None) -> LLMProvider:
    """LLM_PROVIDER → provider: offline (default), bedrock (needs a bedrock-runtime client), openai
    (needs LLM_BASE_URL).  google_genai is not implemented and says so."""
    if settings.llm_provider == "offline":
        return OfflineProvider()
    if settings.llm_provider == "bedrock":
        if bedrock_client is None:
            raise LLMError("LLM_PROVIDER=bedrock needs a boto3 bedrock-runtime client")
        return BedrockProvider(bedrock_client, settings.llm_model)
    if settings.llm_provider == "openai":
        if not settings.llm_base_url:
            raise LLMError("LLM_PROVIDER=openai needs LLM_BASE_URL")
        return OpenAICompatProvider(settings.llm_base_url, settings.llm_model, settings.llm_api_key, http_client)
    raise LLMError(f"LLM_PROVIDER={settings.llm_provider} is not supported; use offline, bedrock or openai")
